"""Templates read through cfn-lint's decoder, and their intrinsics resolved for a test account.

``load`` gives the template as cfn-lint sees it (``!Sub`` is ``{"Fn::Sub": ...}``, ``!If`` is
``{"Fn::If": [...]}``). ``Resolver`` evaluates ``Ref``, ``Fn::Sub``, ``Fn::GetAtt``, ``Fn::If``,
``Fn::Join``, ``Fn::Split``, ``Fn::Select``, ``Fn::Base64`` and the condition functions, with
parameter values (defaults unless given), pseudo parameters of the test account, and the
physical names / attributes the caller knows (``refs``, ``attrs``). ``AWS::NoValue`` drops the
key or list item, as CloudFormation does.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from cfnlint.decode import decode

ROOT = Path(__file__).resolve().parent.parent / "cloudformation"
ACCOUNT = "123456789012"
REGION = "eu-west-1"
_NOVALUE = object()
_LOGIC: dict[str, Any] = {
    "Fn::Equals": lambda v: str(v[0]) == str(v[1]),
    "Fn::Not": lambda v: not v[0],
    "Fn::Or": any,
    "Fn::And": all,
}


def load(path: Path | str) -> dict[str, Any]:
    template, matches = decode(str(path))
    assert template is not None and not matches, matches
    return _plain(template)


def _plain(node: Any) -> Any:
    """cfn-lint's node types (dict_node, str_node, ...) as plain dicts, lists and strings."""
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, str):
        return str(node)
    return node


class Resolver:
    def __init__(self, template: dict[str, Any], params: dict[str, Any] | None = None, *,
                 refs: dict[str, str] | None = None, attrs: dict[str, str] | None = None,
                 region: str = REGION, account: str = ACCOUNT, partition: str = "aws") -> None:
        self.template = template
        values: dict[str, Any] = {
            k: v.get("Default") for k, v in template.get("Parameters", {}).items()}
        values.update(params or {})
        suffix = "amazonaws.com.cn" if partition == "aws-cn" else "amazonaws.com"
        values.update({"AWS::Region": region, "AWS::AccountId": account,
                       "AWS::Partition": partition, "AWS::URLSuffix": suffix,
                       "AWS::StackName": "stack", "AWS::NoValue": _NOVALUE})
        values.update(refs or {})
        self.values = values
        self.attrs = attrs or {}

    def condition(self, name: str) -> bool:
        return bool(self.resolve(self.template["Conditions"][name]))

    def resource(self, logical: str) -> dict[str, Any]:
        """The resource's Properties, resolved."""
        props = self.template["Resources"][logical].get("Properties", {})
        out: dict[str, Any] = self.resolve(props)
        return out

    def resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            items = [self.resolve(v) for v in node]
            return [v for v in items if v is not _NOVALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (key, arg), = node.items()
            if key == "Ref":
                if arg not in self.values:
                    raise KeyError(f"Ref {arg}: no value known")
                return self.values[arg]
            if key == "Condition":
                return self.condition(arg)
            if key.startswith("Fn::"):
                return self._function(key, arg)
        out = {}
        for key, value in node.items():
            resolved = self.resolve(value)
            if resolved is not _NOVALUE:
                out[key] = resolved
        return out

    def _function(self, key: str, arg: Any) -> Any:
        if key == "Fn::Sub":
            text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
            local = {k: self.resolve(v) for k, v in extra.items()}
            return re.sub(r"\$\{([^}!]+)\}", lambda m: str(self._var(m.group(1), local)), text)
        if key == "Fn::GetAtt":
            name = arg if isinstance(arg, str) else ".".join(arg)
            if name not in self.attrs:
                raise KeyError(f"GetAtt {name}: no value known")
            return self.attrs[name]
        if key == "Fn::If":
            cond, yes, no = arg
            return self.resolve(yes if self.condition(cond) else no)
        if key in _LOGIC:
            return _LOGIC[key]([self.resolve(v) for v in arg])
        if key == "Fn::Join":
            sep, items = arg
            return sep.join(str(v) for v in self.resolve(items))
        if key == "Fn::Split":
            sep, text = arg
            return str(self.resolve(text)).split(sep)
        if key == "Fn::Select":
            index, items = arg
            return self.resolve(items)[int(self.resolve(index))]
        if key == "Fn::Base64":
            return self.resolve(arg)
        raise NotImplementedError(key)

    def _var(self, name: str, local: dict[str, Any]) -> Any:
        if name in local:
            return local[name]
        if name in self.values:
            return self.values[name]
        if name in self.attrs:
            return self.attrs[name]
        raise KeyError(f"${{{name}}}: no value known")
