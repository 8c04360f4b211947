"""GET /: a small page where a person fills the customer's fields (generated from the schema) and sees
the prediction, with the features that raise and lower the risk."""

from __future__ import annotations

import html
import json

from churnops.settings import Settings
from serving.openapi import example_request

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>churnops: churn prediction</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:60rem;color:#222;padding:0 1rem}
form{display:grid;grid-template-columns:repeat(auto-fill,minmax(17rem,1fr));gap:.4rem 1.2rem}
label{display:flex;justify-content:space-between;gap:.5rem;font-size:.9rem;align-items:center}
input,select{width:9rem}
.actions{margin:1rem 0;display:flex;gap:1rem;align-items:center;flex-wrap:wrap}
pre{background:#f4f4f4;padding:1rem;overflow:auto}
.High{color:#b00020}.Medium{color:#b26a00}.Low{color:#1b7a1b}
</style></head><body>
<h1>Will this customer leave?</h1>
<p>Model version <b id="version">%(version)s</b>. Fill in the customer's fields (or score a customer by id
from the feature store) and press <i>Predict</i>.
<a href="/openapi.json">API</a> · <a href="/health">health</a> · <a href="/model">model</a></p>
<form id="customer">%(fields)s</form>
<div class="actions"><button id="predict">Predict</button>
<label>Customer id <input id="cid" placeholder="768805383"></label>
<button id="byid">Predict by id</button>
<label>Token <input id="token" type="password" autocomplete="off"
placeholder="if the server needs one"></label></div>
<h2 id="headline"></h2>
<pre id="out"></pre>
<script>
const numeric = %(numeric)s;
async function send(body) {
  const headers = {'Content-Type': 'application/json'};
  const token = document.getElementById('token').value.trim();
  if (token) headers['Authorization'] = 'Bearer ' + token;
  const r = await fetch('/predict?explain=true', {method: 'POST', headers, body: JSON.stringify(body)});
  const doc = await r.json();
  const h = document.getElementById('headline');
  if (r.ok) {
    h.className = doc.risk_level;
    h.textContent = doc.status + ': ' + (100 * doc.attrition_probability).toFixed(1) +
      '%% risk of attrition (' + doc.risk_level + ')';
  } else { h.className = 'High'; h.textContent = 'HTTP ' + r.status; }
  document.getElementById('out').textContent = JSON.stringify(doc, null, 2);
}
document.getElementById('predict').onclick = () => {
  const body = {};
  for (const el of document.getElementById('customer').elements) {
    body[el.name] = numeric.includes(el.name) && el.value.trim() !== '' ? Number(el.value) : el.value;
  }
  send(body);
};
document.getElementById('byid').onclick = () => send({customer_id: document.getElementById('cid').value});
</script></body></html>
"""


def render_page(settings: Settings, model_version: str | None) -> str:
    schema = settings.schema
    example = example_request(settings)
    rows = []
    for col, spec in schema.numeric.items():
        name = schema.api_field(col)
        attrs = f'type="number" step="{1 if spec.integer else "any"}"'
        if spec.min is not None:
            attrs += f' min="{spec.min:g}"'
        if spec.max is not None:
            attrs += f' max="{spec.max:g}"'
        rows.append(f'<label>{html.escape(name)} <input name="{html.escape(name)}" {attrs} '
                    f'value="{html.escape(str(example[name]))}" required></label>')
    for col, cats in schema.categorical.items():
        name = schema.api_field(col)
        options = "".join(
            f'<option{" selected" if c == example[name] else ""}>{html.escape(c)}</option>' for c in cats)
        rows.append(f'<label>{html.escape(name)} '
                    f'<select name="{html.escape(name)}">{options}</select></label>')
    numeric = [schema.api_field(c) for c in schema.numeric]
    return _PAGE % {"fields": "\n".join(rows), "version": html.escape(model_version or "none loaded"),
                    "numeric": json.dumps(numeric).replace("</", "<\\/")}
