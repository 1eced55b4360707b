"""The model whose predictions we attribute: imported from a URI or pretrained, with its optimizer state."""

from pathlib import Path

from dagster import AssetExecutionContext, AssetSpec, DataVersion, MaterializeResult, MetadataValue, multi_asset

from trackstar_pipeline.storage import layout
from trackstar_pipeline.storage.artifacts import file_digest, tree_digest
from trackstar_pipeline.resources import ObjectStoreResource, PipelineConfig, TorchDevice


@multi_asset(
    specs=[
        AssetSpec("model_checkpoint", deps=["corpus_source"], group_name="model", kinds={"pytorch"},
                  description="save_pretrained folder (weights, config, tokenizer) the gradients are taken on."),
        AssetSpec("optimizer_state", deps=["corpus_source"], group_name="model", kinds={"pytorch"},
                  description="The optimizer's second moments V at the checkpoint (1/sqrt(V) correction)."),
    ],
    pool="gpu",
)
def model_training(
    context: AssetExecutionContext, pipeline: PipelineConfig, object_store: ObjectStoreResource, torch_device: TorchDevice
):
    """Imports settings.training.model_uri (and its optimizer state) or pretrains a small model on the corpus."""
    settings = pipeline.settings
    store = object_store.store
    storage = object_store.storage_settings()
    if settings.training.model_uri is None:
        from trackstar_pipeline.training.pretrain import pretrain

        corpus = layout.get_parquet(store, layout.CORPUS_SOURCE)
        result = pretrain(corpus, settings.training, layout.pretrain_workdir(store), progress=context.log.info)
        model_dir, optimizer_path = Path(result.model_dir), result.optimizer_state_path
        source, final_lr = "pretrained on corpus_source", float(result.final_learning_rate)
        training_facts = {"training_plan": result.plan, "parameters": result.parameters, "steps": result.steps,
                          "context_length": result.context_length, "corpus_rows_cut": result.rows_cut}
    else:
        from trackstar_pipeline.models import find_optimizer_state, local_model_dir

        model_dir = local_model_dir(settings.training.model_uri, storage)
        optimizer_path = find_optimizer_state(settings.training.model_uri, settings.training.optimizer_state_uri, storage)
        source, final_lr = settings.training.model_uri, settings.training.learning_rate
        training_facts = {}
    store.delete_prefix(layout.MODEL_DIR)
    store.upload_dir(Path(model_dir), layout.MODEL_DIR)
    model_version = tree_digest(Path(model_dir))
    optimizer_key, optimizer_version = None, "none"
    if optimizer_path is not None:
        optimizer_path = Path(optimizer_path)
        if optimizer_path.resolve().is_relative_to(Path(model_dir).resolve()):  # already uploaded with the model
            optimizer_key = f"{layout.MODEL_DIR}/{optimizer_path.resolve().relative_to(Path(model_dir).resolve()).as_posix()}"
        else:
            optimizer_key = layout.OPTIMIZER_STATE + optimizer_path.suffix
            store.put_file(optimizer_key, optimizer_path)
        optimizer_version = file_digest(optimizer_path)
    layout.put_json(store, layout.MODEL_MANIFEST, {
        "source": source,
        "final_learning_rate": final_lr,
        "optimizer_state_key": optimizer_key,
        "model_version": model_version,
        "optimizer_version": optimizer_version,
    })
    model_bytes = sum(p.stat().st_size for p in Path(model_dir).rglob("*") if p.is_file())
    yield MaterializeResult(
        asset_key="model_checkpoint",
        data_version=DataVersion(model_version),
        metadata={
            "uri": MetadataValue.url(store.uri_for(layout.MODEL_DIR)),
            "source": source,
            "bytes": model_bytes,
            "final_learning_rate": final_lr,
            "device": str(torch_device.torch_device),
            **training_facts,
        },
    )
    yield MaterializeResult(
        asset_key="optimizer_state",
        data_version=DataVersion(optimizer_version),
        metadata={
            "uri": MetadataValue.url(store.uri_for(optimizer_key)) if optimizer_key else "none",
            "correction": settings.attribution.optimizer_correction if optimizer_key else "none (no optimizer state given)",
        },
    )
