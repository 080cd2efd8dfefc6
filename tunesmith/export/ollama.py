"""An Ollama Modelfile beside the exported GGUF: FROM the GGUF, TEMPLATE (a Go template that
renders conversations exactly as the model's Jinja chat template does), SYSTEM (the run's
system prompt), `PARAMETER stop` for each end token and temperature 0 (tunesmith measures
greedy answers). `ollama create NAME -f Modelfile` in the export folder imports it.

Go templates are written for the chat formats tunesmith's models use: ChatML (SmolLM2, Qwen:
`<|im_start|>role\\n...<|im_end|>\\n`) and tunesmith's fallback template (base models without
a template of their own). Any other template is a one-line error rather than a guess.
"""

from __future__ import annotations

import json

from tunesmith.errors import TunesmithError

CHATML = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n"
    "{{ .Content }}<|im_end|>\n"
    "{{ end }}<|im_start|>assistant\n"
)

FALLBACK = (
    "{{- range .Messages }}"
    "{{- if eq .Role \"system\" }}{{ .Content }}\n\n"
    "{{ else if eq .Role \"user\" }}### User:\n{{ .Content }}\n"
    "{{ else }}### Assistant:\n{{ .Content }}@EOS@\n"
    "{{ end }}{{- end }}### Assistant:\n"
)


def go_template(chat_template: str, bos: str | None, eos: str | None) -> str:
    """The Go template equivalent of a Jinja chat template tunesmith knows."""
    if "<|im_start|>" in chat_template and "<|im_end|>" in chat_template:
        return CHATML
    if "### User:" in chat_template and "### Assistant:" in chat_template:
        bos_prefix = (bos or "") if "{{ bos_token }}" in chat_template and "if true" in chat_template else ""
        return bos_prefix + FALLBACK.replace("@EOS@", eos or "")
    raise TunesmithError("ollama export: no Go template known for this model's chat template "
                         "(tunesmith writes ChatML and its fallback format); export --format gguf and write the Modelfile's TEMPLATE by hand")


def _triple(text: str, what: str) -> str:
    if '"""' in text:
        raise TunesmithError(f'ollama export: the {what} contains """, which a Modelfile cannot quote')
    return '"""' + text + '"""'


def modelfile(gguf_name: str, chat_template: str, system: str | None, stops: list[str],
              bos: str | None, eos: str | None) -> str:
    lines = [f"FROM ./{gguf_name}", f"TEMPLATE {_triple(go_template(chat_template, bos, eos), 'template')}"]
    if system:
        lines.append(f"SYSTEM {_triple(system, 'system prompt')}")
    for s in stops:
        lines.append(f"PARAMETER stop {json.dumps(s, ensure_ascii=False)}")
    lines.append("PARAMETER temperature 0")
    return "\n".join(lines) + "\n"


def parse_modelfile(text: str) -> dict:
    """Read back a Modelfile (the subset written here): {"FROM", "TEMPLATE", "SYSTEM", "stop": [...],
    "parameters": {name: value}}. Used by the tests and by `export` to check what it wrote."""
    out: dict = {"stop": [], "parameters": {}}
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        j = i
        while j < n and not text[j].isspace():
            j += 1
        cmd = text[i:j].upper()
        rest = text[j:].lstrip(" ")
        if rest.startswith('"""'):
            end = rest.index('"""', 3)
            value, consumed = rest[3:end], end + 3
        else:
            line = rest.split("\n", 1)[0]
            value, consumed = line.strip(), len(line)
        i = n - len(rest) + consumed
        if cmd == "PARAMETER":
            name, _, val = value.partition(" ")
            val = json.loads(val) if val.startswith('"') else val
            if name == "stop":
                out["stop"].append(val)
            else:
                out["parameters"][name] = val
        else:
            out[cmd] = value
    return out
