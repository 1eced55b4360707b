"""The evaluation report folder: evaluation.json, report.md, PNG plots and an offline HTML explorer.

Plots use matplotlib's object API (`Figure` renders with Agg, no pyplot state, no display). The
explorer is one self-contained HTML file: inline CSS and JS, the data embedded as JSON, no network.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Mapping

from matplotlib.figure import Figure

from trackstar_pipeline.evaluation.metrics import bucket_sort_key
from trackstar_pipeline.evaluation.recall_summary import correct_only_summary, recall_line, recall_warning
from trackstar_pipeline.evaluation.result import EvaluationResult
from trackstar_pipeline.evaluation.tailpatch import PairedDifference

EXPLORER_TOP = 10
"""Proponents per query and method shown in the explorer."""
SPLIT_METHODS = ("trackstar", "bm25", "embed", "random", "trackstar+bm25")
"""Methods drawn in the frequency-bucket plot (all methods stay in the tables)."""
PLOT_METRICS = ("mrr", "recall@10", "tailpatch@10")
FILES = {"json": "evaluation.json", "markdown": "report.md", "explorer": "explorer.html",
         "metrics_plot": "metrics_by_method.png", "sweep_plot": "mrr_vs_projection_dim.png",
         "frequency_plot": "metrics_by_frequency.png"}


def _cell(value: Any, column: str = "") -> str:
    """Table text: ranking metrics with 3 decimals, tail-patch deltas (often ~1e-4) in signed e-notation."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:+.2e}" if column.startswith("tailpatch") else f"{value:.3f}"
    return str(value)


def _metric_columns(table: Mapping[str, Mapping[str, Any]]) -> list[str]:
    first = next(iter(table.values()), {})
    wanted = ["mrr", "recall@10"] + sorted((key for key in first if key.startswith("tailpatch@")),
                                           key=lambda key: int(key.split("@")[1]))
    return [key for key in wanted if key in first]


def metrics_table(summary: Mapping[str, Any], setting: str = "open_set") -> str:
    """Markdown table: one row per method, MRR, Recall@10 and tail-patch@k (Δp) columns."""
    table = summary.get(setting) or {}
    if not table:
        return f"_no {setting.replace('_', ' ')} results_"
    columns = _metric_columns(table)
    lines = ["| method | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for method in summary.get("methods", table):
        if method in table:
            lines.append(f"| {method} | " + " | ".join(_cell(table[method].get(c), c) for c in columns) + " |")
    return "\n".join(lines)


PAIRED_LEGEND = ("Each method's tail-patch@k minus trackstar's over the same queries, with its 95% interval. "
                 "≈: the interval holds 0, so these queries do not settle which of the two moves the model more; "
                 "–: fewer than two queries to pair. Methods that rank exactly as trackstar are left out.")


def _paired_cell(record: Mapping[str, Any] | None) -> str:
    if not record or record.get("mean") is None:
        return "–"
    difference = PairedDifference(**record)
    return f"{difference.mean:+.1e} ± {difference.half_width:.1e}" + (" ≈" if difference.within_noise else "")


def paired_table(summary: Mapping[str, Any], setting: str = "open_set") -> str:
    """Markdown table of each method's paired tail-patch difference from trackstar (tailpatch.paired_against)."""
    table = (summary.get("paired_tailpatch") or {}).get(setting) or {}
    if not table:
        return "_no paired tail-patch (no tail-patch, no trackstar ranking, or every method ranks as trackstar)_"
    columns = sorted({key for per_method in table.values() for key in per_method}, key=lambda key: int(key.split("@")[1]))
    lines = ["| method | " + " | ".join(f"{c} − trackstar's" for c in columns) + " |", "|---|" + "---:|" * len(columns)]
    for method in summary.get("methods", table):
        if method in table:
            lines.append(f"| {method} | " + " | ".join(_paired_cell(table[method].get(c)) for c in columns) + " |")
    return "\n".join(lines)


def recall_header(summary: Mapping[str, Any]) -> str:
    """Fact recall first, then the low-recall warning when it applies (recall_summary.py says why)."""
    warning = recall_warning(summary.get("fact_recall"))
    return recall_line(summary) + (f"\n\n**{warning}**" if warning else "")


def correct_only_table(summary: Mapping[str, Any], setting: str = "open_set") -> str:
    """The metrics table over the queries the model gets right (those whose attribution means something)."""
    restricted = correct_only_summary(summary, setting)
    return metrics_table(restricted, setting) if restricted else "_no query the model gets right (or recall unknown)_"


def headline_table(summary: Mapping[str, Any]) -> str:
    """What `trackstar run` prints last: fact recall (and warning), open-set metrics for all queries and correct ones."""
    head = (f"{summary.get('n_queries')} queries, {summary.get('n_corpus')} corpus rows; "
            "tail-patch = mean change in p(completion) after one step")
    paired = (["Tail-patch against trackstar, paired (≈: within noise):", paired_table(summary, "open_set")]
              if (summary.get("paired_tailpatch") or {}).get("open_set") else [])
    return "\n\n".join([recall_header(summary), head, "All queries:", metrics_table(summary, "open_set"), *paired,
                         "Queries the model gets right:", correct_only_table(summary)])


def split_table(summary: Mapping[str, Any], setting: str, split: str, metric: str) -> str:
    """Markdown table of one metric by group (frequency bucket or correctness) per method."""
    data = summary.get("splits", {}).get(setting, {}).get(split)
    if not data:
        return "_not available_"
    groups = sorted({g for per_method in data.values() for g in per_method}, key=bucket_sort_key
                    if split == "by_frequency" else str)
    counts = {g: next((data[m][g]["n_queries"] for m in data if g in data[m]), 0) for g in groups}
    lines = ["| method | " + " | ".join(f"{g} (n={counts[g]})" for g in groups) + " |",
             "|---|" + "---:|" * len(groups)]
    for method in summary.get("methods", data):
        if method in data:
            lines.append(f"| {method} | " + " | ".join(_cell(data[method].get(g, {}).get(metric), metric) for g in groups)
                         + " |")
    return "\n".join(lines)


def _sweep_points(table: Mapping[str, Mapping[str, Any]], metric: str) -> list[tuple[int, float]]:
    points = []
    for method, metrics in table.items():
        match = re.fullmatch(r"trackstar_d(\d+)", method)
        if match and metrics.get(metric) is not None:
            points.append((int(match.group(1)), float(metrics[metric])))
    return sorted(points)


def plot_metrics_by_method(summary: Mapping[str, Any], path: Path) -> None:
    """Horizontal bars per method for MRR, Recall@10 and tail-patch@10, open and closed set."""
    methods = [m for m in summary["methods"] if not re.fullmatch(r"trackstar_d\d+", m)]
    figure = Figure(figsize=(4 * len(PLOT_METRICS), 0.45 * len(methods) + 1.6), layout="constrained")
    axes = figure.subplots(1, len(PLOT_METRICS), sharey=True)
    for ax, metric in zip(axes, PLOT_METRICS):
        for offset, (setting, color) in enumerate((("open_set", "#3b6ea5"), ("closed_set", "#e39b3a"))):
            values = [(summary.get(setting, {}).get(m, {}).get(metric)) for m in methods]
            ax.barh([i + 0.38 * offset for i in range(len(methods))], [v or 0.0 for v in values], height=0.38,
                    color=color, label=setting.replace("_", " "))
        ax.set_title(metric)
        ax.axvline(0, color="black", linewidth=0.6)
    axes[0].set_yticks([i + 0.19 for i in range(len(methods))], methods)
    axes[0].invert_yaxis()
    axes[-1].legend(loc="lower right", fontsize=8)
    figure.savefig(path, dpi=110)


def plot_projection_sweep(summary: Mapping[str, Any], path: Path) -> None:
    """MRR (and tail-patch@10 on a second axis) against the projection dimension d."""
    figure = Figure(figsize=(6, 3.6), layout="constrained")
    ax = figure.subplots()
    for setting, style in (("open_set", "o-"), ("closed_set", "s--")):
        points = _sweep_points(summary.get(setting, {}), "mrr")
        if points:
            ax.plot([d for d, _ in points], [v for _, v in points], style, label=f"MRR ({setting.replace('_', ' ')})")
    tail = _sweep_points(summary.get("open_set", {}), "tailpatch@10")
    if tail:
        twin = ax.twinx()
        twin.plot([d for d, _ in tail], [v for _, v in tail], "^:", color="#b23a48", label="tail-patch@10 (open)")
        twin.set_ylabel("tail-patch@10 (Δp)")
        twin.legend(loc="lower right", fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("projection dimension d")
    ax.set_ylabel("MRR")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no projection-dimension sweep in this run", ha="center", transform=ax.transAxes)
    ax.set_title("TrackStar vs projection dimension")
    figure.savefig(path, dpi=110)


def plot_by_frequency(summary: Mapping[str, Any], path: Path) -> None:
    """MRR and tail-patch@10 per fact-frequency bucket (open set) for the main methods."""
    data = summary.get("splits", {}).get("open_set", {}).get("by_frequency", {})
    figure = Figure(figsize=(10, 3.8), layout="constrained")
    axes = figure.subplots(1, 2)
    buckets = sorted({g for per_method in data.values() for g in per_method}, key=bucket_sort_key)
    for ax, metric in zip(axes, ("mrr", "tailpatch@10")):
        for method in (m for m in SPLIT_METHODS if m in data):
            values = [data[method].get(b, {}).get(metric) for b in buckets]
            ax.plot(range(len(buckets)), [math.nan if v is None else v for v in values], "o-", label=method)
        ax.set_xticks(range(len(buckets)), buckets)
        ax.set_xlabel("ground-truth proponents per fact")
        ax.set_title(f"{metric} by fact frequency (open set)")
    axes[0].legend(fontsize=8)
    figure.savefig(path, dpi=110)


def explorer_data(result: EvaluationResult, top: int = EXPLORER_TOP) -> dict[str, Any]:
    """The JSON the explorer renders: queries, per-method top proponents with scores and Δp, texts."""
    rankings: dict[str, dict[str, dict[str, list]]] = {}
    used: set[str] = set()
    for setting, per_method in result.rankings.items():
        rankings[setting] = {}
        for method, per_query in per_method.items():
            rankings[setting][method] = {}
            for query_id, ranking in per_query.items():
                rows = []
                for corpus_id, score in ranking[:top]:
                    effect = result.effects.get((corpus_id, query_id))
                    rows.append([corpus_id, round(float(score), 6), None if effect is None else effect.delta_prob])
                    used.add(corpus_id)
                rankings[setting][method][query_id] = rows
    queries = []
    for row in result.queries.iter_rows(named=True):
        truth = result.ground_truth.get(row["id"], [])
        used.update(truth[:top])
        queries.append({"id": row["id"], "prompt": row["prompt"], "completion": row["completion"],
                        "gt": truth, "bucket": row["bucket"], "correct": row["correct"]})
    summary = result.summary
    return {"methods": summary["methods"], "settings": list(result.rankings), "queries": queries,
            "texts": {corpus_id: result.corpus_text.get(corpus_id, "") for corpus_id in sorted(used)},
            "rankings": rankings,
            "metrics": {setting: summary.get(setting, {}) for setting in result.rankings},
            "info": {"n_queries": summary["n_queries"], "n_corpus": summary["n_corpus"],
                     "fact_recall": summary.get("fact_recall")}}


EXPLORER_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>TrackStar proponent explorer</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222}
header{padding:8px 14px;background:#243b55;color:#fff;display:flex;gap:14px;align-items:center;flex-wrap:wrap}
header h1{font-size:17px;margin:0 12px 0 0}
main{display:flex;height:calc(100vh - 52px)}
#list{width:320px;overflow:auto;border-right:1px solid #ccc}
#list input{box-sizing:border-box;width:calc(100% - 12px);margin:6px;padding:4px}
.q{padding:5px 8px;cursor:pointer;border-bottom:1px solid #eee}
.q.active{background:#dde8f5}
.q small{color:#777}
#detail{flex:1;overflow:auto;padding:10px 16px}
table{border-collapse:collapse;margin:6px 0}
td,th{border:1px solid #ddd;padding:3px 7px;vertical-align:top}
th{background:#f3f3f3}
tr.gt td{background:#e3f6e3}
.mark{color:#1a7f1a;font-weight:bold}
.up{color:#1a7f1a}.down{color:#b23a48}
.prompt{font-size:16px}.completion{font-weight:bold;color:#243b55}
</style></head><body>
<header><h1>TrackStar proponent explorer</h1>
<label>method <select id="method"></select></label>
<label>setting <select id="setting"></select></label>
<span id="info"></span></header>
<main><div id="list"><input id="filter" placeholder="filter queries"><div id="queries"></div></div>
<div id="detail"></div></main>
<script id="explorer-data" type="application/json">__DATA__</script>
<script>
(function(){
const data = JSON.parse(document.getElementById('explorer-data').textContent);
const byId = {}; data.queries.forEach(q => byId[q.id] = q);
const state = {method: data.methods.includes('trackstar') ? 'trackstar' : data.methods[0],
               setting: data.settings[0], query: data.queries.length ? data.queries[0].id : null};
const params = new URLSearchParams(location.hash.slice(1));
if (params.get('method') && data.methods.includes(params.get('method'))) state.method = params.get('method');
if (params.get('setting') && data.settings.includes(params.get('setting'))) state.setting = params.get('setting');
if (params.get('query') && byId[params.get('query')]) state.query = params.get('query');
function el(tag, attrs, text){const e=document.createElement(tag);
  Object.entries(attrs||{}).forEach(([k,v])=>e.setAttribute(k,v)); if(text!==undefined) e.textContent=text; return e;}
function fmt(x, d){return (x===null||x===undefined)?'\\u2013':(Math.abs(x)<1e-3&&x!==0?x.toExponential(2):x.toFixed(d||3));}
function options(select, values, current){values.forEach(v=>{const o=el('option',{value:v},v);
  if(v===current) o.selected=true; select.appendChild(o);});}
const methodSelect=document.getElementById('method'), settingSelect=document.getElementById('setting');
options(methodSelect, data.methods, state.method); options(settingSelect, data.settings, state.setting);
methodSelect.onchange=()=>{state.method=methodSelect.value; render();};
settingSelect.onchange=()=>{state.setting=settingSelect.value; render();};
document.getElementById('filter').oninput=renderList;
document.getElementById('info').textContent = data.info.n_queries + ' queries, ' + data.info.n_corpus +
  ' corpus rows, fact recall ' + fmt(data.info.fact_recall);
function renderList(){
  const box=document.getElementById('queries'); box.textContent='';
  const needle=document.getElementById('filter').value.toLowerCase();
  data.queries.filter(q=>(q.prompt+q.completion+q.id).toLowerCase().includes(needle)).forEach(q=>{
    const row=el('div',{class:'q'+(q.id===state.query?' active':''),'data-query':q.id});
    row.appendChild(el('div',{},q.prompt+' \\u2192'+q.completion));
    row.appendChild(el('small',{},q.id+' \\u00b7 '+q.gt.length+' ground truth'+(q.correct===null?'':(q.correct?' \\u00b7 predicted':' \\u00b7 missed'))));
    row.onclick=()=>{state.query=q.id; render();}; box.appendChild(row);});
}
function renderMetrics(detail){
  const metrics=data.metrics[state.setting]||{}; const m=metrics[state.method]; if(!m) return;
  const keys=Object.keys(m).filter(k=>k==='mrr'||k.startsWith('recall@')||/^tailpatch@\\d+$/.test(k));
  const t=el('table',{id:'method-metrics'}); const h=el('tr'); const r=el('tr');
  h.appendChild(el('th',{},state.method+' ('+state.setting.replace('_',' ')+')')); r.appendChild(el('td',{},'all queries'));
  keys.forEach(k=>{h.appendChild(el('th',{},k)); r.appendChild(el('td',{},fmt(m[k])));});
  t.appendChild(h); t.appendChild(r); detail.appendChild(t);
}
function render(){
  location.replace('#query='+encodeURIComponent(state.query||'')+'&method='+encodeURIComponent(state.method)+
    '&setting='+encodeURIComponent(state.setting));
  renderList(); const detail=document.getElementById('detail'); detail.textContent='';
  renderMetrics(detail);
  const q=byId[state.query]; if(!q){detail.appendChild(el('p',{},'no query selected')); return;}
  const title=el('p',{class:'prompt',id:'query-text'}); title.appendChild(el('span',{},q.prompt));
  title.appendChild(el('span',{class:'completion'},q.completion)); detail.appendChild(title);
  detail.appendChild(el('p',{},'query '+q.id+' \\u00b7 frequency bucket '+q.bucket+' \\u00b7 ground truth: '+
    (q.gt.length?q.gt.join(', '):'none')+(q.correct===null?'':' \\u00b7 model '+(q.correct?'predicts':'misses')+' it')));
  const rows=((data.rankings[state.setting]||{})[state.method]||{})[q.id]||[];
  const truth=new Set(q.gt); const table=el('table',{id:'proponents'});
  const head=el('tr'); ['rank','ground truth','id','score','tail-patch \\u0394p','text'].forEach(c=>head.appendChild(el('th',{},c)));
  table.appendChild(head);
  rows.forEach((p,i)=>{const [id,score,dp]=p; const tr=el('tr',{class:truth.has(id)?'gt':'', 'data-id':id});
    tr.appendChild(el('td',{},String(i+1)));
    tr.appendChild(el('td',{class:'mark'},truth.has(id)?'\\u2713':''));
    tr.appendChild(el('td',{},id)); tr.appendChild(el('td',{},fmt(score,4)));
    tr.appendChild(el('td',{class:dp===null?'':(dp>=0?'up':'down')},dp===null?'\\u2013':(dp>=0?'+':'')+fmt(dp,4)));
    tr.appendChild(el('td',{},data.texts[id]||'')); table.appendChild(tr);});
  detail.appendChild(el('h3',{},'top '+rows.length+' proponents by '+state.method));
  detail.appendChild(table);
}
render();
})();
</script></body></html>
"""


def explorer_html(result: EvaluationResult) -> str:
    """The self-contained explorer page (data embedded; '<' escaped so no text can close the script)."""
    payload = json.dumps(explorer_data(result), separators=(",", ":")).replace("<", "\\u003c")
    return EXPLORER_TEMPLATE.replace("__DATA__", payload)


def fusion_sentence(summary: Mapping[str, Any]) -> str:
    """' trackstar+bm25 fuses A with B.' when evaluation.json names the fused methods, else ''."""
    names = summary.get("fusion_methods") or []
    return f" trackstar+bm25 fuses {' with '.join(names)}." if names else ""


def bm25_sentence(summary: Mapping[str, Any]) -> str:
    """' BM25 scores a row of N or more sentences by its best sentence ...' when evaluation split rows, else ''."""
    split = summary.get("settings", {}).get("evaluation", {}).get("bm25_split_sentences", 0)
    return (f" BM25 scores a row of {split} or more sentences by its best-matching sentence "
            "(evaluation.bm25_split_sentences)." if split else "")


def report_markdown(summary: Mapping[str, Any]) -> str:
    """report.md: the tables, the split tables and the figures (relative links)."""
    settings = summary.get("settings", {})
    parts = [
        "# TrackStar evaluation",
        recall_header(summary),
        f"{summary['n_queries']} queries (of {summary.get('n_queries_total', summary['n_queries'])}) against "
        f"{summary['n_corpus']} corpus rows. Projection d = {settings.get('projection_dim')}, "
        f"λ = {_cell(settings.get('lambda'))}, fact recall {_cell(summary.get('fact_recall'))}, "
        f"table version {summary.get('table_version')}.",
        "MRR and Recall@10 rank against ground-truth proponents (corpus rows stating the queried fact; ties "
        "ranked pessimistically; queries without any are excluded and counted in evaluation.json). "
        "tail-patch@k is the mean change in p(completion | prompt) after one optimizer step at the final "
        "learning rate on each of a query's top-k proponents separately." + fusion_sentence(summary)
        + bm25_sentence(summary),
        "## Open set (whole corpus)", metrics_table(summary, "open_set"),
        "## Open set, tail-patch against trackstar (paired)", PAIRED_LEGEND, paired_table(summary, "open_set"),
        "## Open set, queries the model gets right", correct_only_table(summary),
        "## Closed set (ground truth + BM25 top + same completion + random)", metrics_table(summary, "closed_set"),
        f"![metrics by method]({FILES['metrics_plot']})",
        "## Projection dimension", f"![MRR vs projection dimension]({FILES['sweep_plot']})",
        "## By fact frequency (open set)", "MRR:", split_table(summary, "open_set", "by_frequency", "mrr"),
        "tail-patch@10:", split_table(summary, "open_set", "by_frequency", "tailpatch@10"),
        f"![by frequency]({FILES['frequency_plot']})",
        "## By model correctness (open set)", "MRR:", split_table(summary, "open_set", "by_correct", "mrr"),
        "tail-patch@10:", split_table(summary, "open_set", "by_correct", "tailpatch@10"),
        f"## Explorer\nOpen [{FILES['explorer']}]({FILES['explorer']}) in a browser (works offline) to see "
        "each query's proponents per method.",
    ]
    return "\n\n".join(parts) + "\n"


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_report(result: EvaluationResult, output_dir: Path) -> dict[str, Path]:
    """Write every report file into output_dir; returns kind -> path."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {kind: output_dir / name for kind, name in FILES.items()}
    paths["json"].write_text(json.dumps(_json_safe(result.summary), indent=2, allow_nan=False))
    paths["markdown"].write_text(report_markdown(result.summary))
    plot_metrics_by_method(result.summary, paths["metrics_plot"])
    plot_projection_sweep(result.summary, paths["sweep_plot"])
    plot_by_frequency(result.summary, paths["frequency_plot"])
    paths["explorer"].write_text(explorer_html(result), encoding="utf-8")
    return paths
