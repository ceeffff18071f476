"""Label and field selectors with the syntax and semantics of Kubernetes (apimachinery labels/fields)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# A label key is an optional DNS subdomain prefix plus a name of up to 63 characters.
_KEY = r"(?:[a-z0-9](?:[-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?"
_VALUE = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET_RE = re.compile(rf"^\s*(!?)\s*({_KEY})\s*(?:(notin|in)\s*\((.*)\))?\s*$")
_EQ_RE = re.compile(rf"^\s*({_KEY})\s*(==|!=|=)\s*({_VALUE})\s*$")
_VALUE_RE = re.compile(rf"^{_VALUE}$")


class SelectorError(ValueError):
    """A selector that cannot be parsed; the API answers 400 BadRequest with this message."""


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        # "!=" and "notin" also match objects that lack the label, as in Kubernetes.
        return not present or value not in self.values


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside parentheses (set-based values contain commas)."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError(f"unable to parse requirement: unbalanced ')' in {text!r}")
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth:
        raise SelectorError(f"unable to parse requirement: unclosed '(' in {text!r}")
    parts.append("".join(current))
    return parts


def parse_label_selector(text: str | None) -> tuple[Requirement, ...]:
    """Parse `a=b,c!=d,e in (x,y),f notin (z),g,!h`; an empty selector matches everything."""
    if not text or not text.strip():
        return ()
    reqs: list[Requirement] = []
    for part in _split_top_level(text):
        if not part.strip():
            raise SelectorError(f"unable to parse requirement: empty term in label selector {text!r}")
        m = _EQ_RE.match(part)
        if m:
            op = "!=" if m.group(2) == "!=" else "="
            reqs.append(Requirement(m.group(1), op, (m.group(3),)))
            continue
        m = _SET_RE.match(part)
        if not m:
            raise SelectorError(f"unable to parse requirement: {part.strip()!r} is not a valid label selector term")
        negated, key, op, raw_values = m.groups()
        if op:
            if negated:
                raise SelectorError(f"unable to parse requirement: '!' cannot be combined with {op!r}")
            values = tuple(v.strip() for v in raw_values.split(","))
            bad = [v for v in values if not _VALUE_RE.match(v)]
            if bad or not values:
                raise SelectorError(f"unable to parse requirement: invalid label value(s) {bad} in {part.strip()!r}")
            reqs.append(Requirement(key, op, values))
        else:
            reqs.append(Requirement(key, "!" if negated else "exists"))
    return tuple(reqs)


def matches_labels(requirements: tuple[Requirement, ...], labels: Mapping[str, str] | None) -> bool:
    labels = labels or {}
    return all(r.matches(labels) for r in requirements)


def label_matcher(text: str | None) -> Callable[[dict[str, Any]], bool]:
    """A predicate on whole objects for a label-selector string (parsed once)."""
    reqs = parse_label_selector(text)
    return lambda obj: matches_labels(reqs, (obj.get("metadata") or {}).get("labels"))


_OPERATORS = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}


def matches_label_selector_dict(labels: Mapping[str, str] | None, selector: Mapping[str, Any] | None) -> bool:
    """Match a LabelSelector object (`matchLabels` + `matchExpressions`); an empty selector matches all."""
    if not selector:
        return True
    labels = labels or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        op = _OPERATORS.get(expr.get("operator", ""))
        if op is None:
            raise SelectorError(f"{expr.get('operator')!r} is not a valid label selector operator")
        if not Requirement(expr["key"], op, tuple(expr.get("values") or ())).matches(labels):
            return False
    return True


@dataclass(frozen=True)
class FieldRequirement:
    path: tuple[str, ...]
    negate: bool
    value: str

    def matches(self, obj: Mapping[str, Any]) -> bool:
        current: Any = obj
        for part in self.path:
            current = current.get(part) if isinstance(current, Mapping) else None
        actual = _field_string(current)
        return (actual != self.value) if self.negate else (actual == self.value)


def _field_string(value: Any) -> str:
    # Kubernetes compares field selectors against string forms; an absent field is the empty string.
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


_FIELD_RE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_.]*)\s*(==|!=|=)\s*(.*?)\s*$")


def parse_field_selector(text: str | None) -> tuple[FieldRequirement, ...]:
    """Parse `metadata.name=x,spec.nodeName=,status.phase!=Running` (dotted paths into the object)."""
    if not text or not text.strip():
        return ()
    reqs: list[FieldRequirement] = []
    for part in _split_escaped(text):
        m = _FIELD_RE.match(part)
        if not m:
            raise SelectorError(f"invalid selector: {part!r}; a field selector term is 'path=value' or 'path!=value'")
        path, op, value = m.groups()
        reqs.append(FieldRequirement(tuple(path.split(".")), op == "!=", _unescape(value)))
    return tuple(reqs)


def _split_escaped(text: str) -> list[str]:
    """Split on commas not escaped with a backslash (fields.EscapeValue escapes `\\`, `,` and `=`)."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for ch in text:
        if escaped:
            current.append("\\" + ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ",":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


def matches_fields(requirements: tuple[FieldRequirement, ...], obj: Mapping[str, Any]) -> bool:
    return all(r.matches(obj) for r in requirements)


def field_matcher(text: str | None) -> Callable[[dict[str, Any]], bool]:
    reqs = parse_field_selector(text)
    return lambda obj: matches_fields(reqs, obj)


def object_matcher(label_selector: str | None, field_selector: str | None) -> Callable[[dict[str, Any]], bool]:
    """One predicate for both selectors; raises SelectorError on bad syntax before any object is examined."""
    labels = parse_label_selector(label_selector)
    fields = parse_field_selector(field_selector)
    return lambda obj: matches_labels(labels, (obj.get("metadata") or {}).get("labels")) and matches_fields(fields, obj)
