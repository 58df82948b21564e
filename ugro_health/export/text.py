"""The metric families of one scrape, and their text exposition (format 0.0.4).

Imports nothing of ours. A scrape of a large cluster is mostly GPU series that share their
labels: a ``LabelSet`` is escaped and rendered once per node or GPU and reused by every family
that describes it, so writing a series costs one string format. prometheus-client's generic
encoder re-validates and re-escapes every label of every sample (about 8 µs a series here, 190
ms for 128 nodes x 8 GPUs); ``render`` writes the same text in a fraction of that.
``to_client_families`` hands the same data to prometheus-client (``Collector.collect()``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    """A label value as the text format quotes it: backslash, double quote, line feed."""
    if "\\" in value or '"' in value or "\n" in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


class LabelSet:
    """Label values, and their ``{name="value",...}`` text, rendered once."""

    __slots__ = ("text", "values")

    def __init__(self, names: Sequence[str], values: Sequence[str]) -> None:
        self.values = tuple(values)
        pairs = ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True))
        self.text = "{" + pairs + "}" if pairs else ""


NO_LABELS = LabelSet((), ())


class Family:
    """One metric: name, help, type, label names and samples.

    In text mode (``/metrics``) each sample is written as its exposition line when added,
    which is most of a large scrape's work done with one string format and no other object;
    otherwise samples are kept as (label set, value) for prometheus-client."""

    __slots__ = ("documentation", "kind", "label_names", "name", "sample_name", "samples", "text")

    def __init__(
        self,
        name: str,
        documentation: str,
        label_names: Sequence[str],
        kind: str = "gauge",
        text: bool = True,
    ) -> None:
        self.name = name  # a counter's without "_total": its sample carries the suffix
        self.sample_name = name + "_total" if kind == "counter" else name
        self.documentation = documentation
        self.label_names = tuple(label_names)
        self.kind = kind
        self.text = text
        self.samples: list[Any] = []  # lines (text mode) or (LabelSet, float)

    def add(self, labels: LabelSet, value: float) -> None:
        if self.text:
            self.samples.append(f"{self.sample_name}{labels.text} {float(value)!r}\n")
        else:
            self.samples.append((labels, float(value)))


def render(families: Iterable[Family]) -> bytes:
    """The text exposition of the (text mode) families that have samples."""
    out: list[str] = []
    for family in families:
        if not family.samples:
            continue
        name = family.sample_name  # HELP and TYPE name the sample, as prometheus-client's 0.0.4
        help_text = family.documentation.replace("\\", "\\\\").replace("\n", "\\n")
        out.append(f"# HELP {name} {help_text}\n# TYPE {name} {family.kind}\n")
        out.extend(family.samples)
    return "".join(out).encode()


def to_client_families(families: Iterable[Family]) -> Iterator[Metric]:
    """The (sample mode) families as prometheus-client metric families."""
    for family in families:
        if not family.samples:
            continue
        make = CounterMetricFamily if family.kind == "counter" else GaugeMetricFamily
        metric = make(family.name, family.documentation, labels=family.label_names)
        for labels, value in family.samples:
            metric.add_metric(labels.values, value)
        yield metric
