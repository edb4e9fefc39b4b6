"""Parses Prometheus text (stdin) with prometheus_client's parser, the reference one; prints
{"families": {name: {"type", "documentation"}}, "samples": [{"name", "labels", "value"}]} as
JSON. A text the parser refuses exits non-zero with its error."""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

families = {}
samples = []
for family in text_string_to_metric_families(sys.stdin.read()):
    families[family.name] = {"type": family.type, "documentation": family.documentation}
    for s in family.samples:
        samples.append({"family": family.name, "name": s.name, "labels": s.labels, "value": s.value})
json.dump({"families": families, "samples": samples}, sys.stdout)
