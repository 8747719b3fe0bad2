"""`tenantry check FILE|DIR|-`: the admission rules, offline, on manifests, for CI pipelines.

Reads YAML or JSON manifests (multi-document files, `List`s such as `kubectl get -o yaml` prints,
directories searched recursively, kustomize or helm output on stdin as `-`), judges every
pod-bearing object, Service and Ingress exactly as the webhook would (except an Ingress's host
claims, which need the cluster), and prints a report naming the file, the object and the field
path of each violation. With `--tenant`, the Tenant's exemptions, quota and allowedHostnames
apply; its mode does not: a CI check fails on what Warn or Audit mode would let through.

Exit status: 0 when nothing is violated, 1 when something is, 2 when an input could not be read
or parsed (whatever else was found), so a pipeline never mistakes a broken input for a pass.

The work is split so that only `read_sources`, `load_tenant` and `run` touch files and streams;
parsing, checking and rendering are pure.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from tenantry.admission import podspecs
from tenantry.admission.violation import Violation, mapping

# Why the YAML parser, pydantic and the models (through `policy`) are imported where used, not
# here: the CLI imports this module to register the subcommand, and they would add a third of a
# second to every `tenantry` command, `tenantry --help` included.
if TYPE_CHECKING:
    from tenantry.admission import policy
    from tenantry.model import tenant

STDIN = "-"
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")

EXIT_OK = 0
EXIT_VIOLATIONS = 1
EXIT_ERROR = 2


def _load_yaml(text: str) -> list[Any]:
    """Every document of a YAML stream, with the safe loader (libyaml's when available: several
    times faster on large kustomize outputs)."""
    import yaml

    loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return list(yaml.load_all(text, Loader=loader))


@dataclasses.dataclass(frozen=True, slots=True)
class Source:
    """One input: a file's name (or "<stdin>") and its text."""

    name: str
    text: str


@dataclasses.dataclass(frozen=True, slots=True)
class Located:
    """An object and where it was written."""

    source: str
    document: int
    """1-based index of the YAML document in the source."""
    item: int | None
    """0-based index in the document's `items` when the document is a List."""
    obj: podspecs.Obj

    @property
    def where(self) -> str:
        place = f"{self.source} (document {self.document}"
        if self.item is not None:
            place += f", items[{self.item}]"
        return place + ")"


@dataclasses.dataclass(frozen=True, slots=True)
class ObjectReport:
    """The verdict on one checked object."""

    located: Located
    violations: tuple[Violation, ...]
    exempted: tuple[policy.Exempted, ...]

    @property
    def kind(self) -> str:
        kind = self.located.obj.get("kind")
        return kind if isinstance(kind, str) else "?"

    @property
    def name(self) -> str:
        """namespace/name, name, or generateName followed by "*"."""
        metadata = mapping(self.located.obj.get("metadata"))
        name = metadata.get("name")
        if not isinstance(name, str):
            generate = metadata.get("generateName")
            name = f"{generate}*" if isinstance(generate, str) else "<unnamed>"
        namespace = metadata.get("namespace")
        return f"{namespace}/{name}" if isinstance(namespace, str) else name

    def to_dict(self) -> dict[str, Any]:
        obj = self.located.obj
        metadata = mapping(obj.get("metadata"))
        return {
            "file": self.located.source,
            "document": self.located.document,
            "item": self.located.item,
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "namespace": metadata.get("namespace"),
            "name": metadata.get("name"),
            "violations": [v.to_dict() for v in self.violations],
            "exempted": [
                {"violation": e.violation.to_dict(),
                 "exemption": e.exemption.wire()}
                for e in self.exempted
            ],
        }


@dataclasses.dataclass(frozen=True, slots=True)
class Report:
    """Everything `tenantry check` found."""

    objects: tuple[ObjectReport, ...]
    """Every pod-bearing object and Service, clean or not, in input order."""
    skipped: int
    """Objects of kinds the rules do not concern (ConfigMaps, Namespaces, ...)."""
    errors: tuple[str, ...]
    """Inputs that could not be read or parsed."""

    @property
    def violation_count(self) -> int:
        return sum(len(o.violations) for o in self.objects)

    @property
    def exit_code(self) -> int:
        if self.errors:
            return EXIT_ERROR
        return EXIT_VIOLATIONS if self.violation_count else EXIT_OK


# -- parsing (pure) ------------------------------------------------------------------------------

def _is_list(obj: podspecs.Obj) -> bool:
    kind = obj.get("kind")
    return (isinstance(kind, str) and kind.endswith("List")
            and isinstance(obj.get("items"), list))


def parse(source: Source) -> tuple[list[Located], list[str]]:
    """The objects of one source, Lists flattened; and the errors that stopped parsing."""
    import yaml

    try:
        if source.name.endswith(".json"):
            documents: list[Any] = [json.loads(source.text)]
        else:
            documents = _load_yaml(source.text)
    except (yaml.YAMLError, ValueError) as error:
        return [], [f"{source.name}: not valid YAML/JSON: {error}"]
    found: list[Located] = []
    errors: list[str] = []
    for number, document in enumerate(documents, start=1):
        if document is None:
            continue  # an empty document, e.g. after a trailing "---"
        if not isinstance(document, dict):
            errors.append(f"{source.name} (document {number}): not an object but "
                          f"{type(document).__name__}")
            continue
        if not _is_list(document):
            found.append(Located(source.name, number, None, document))
            continue
        for index, item in enumerate(document["items"]):
            if isinstance(item, dict):
                found.append(Located(source.name, number, index, item))
            else:
                errors.append(f"{source.name} (document {number}, items[{index}]): not an object")
    return found, errors


# -- checking (pure) -----------------------------------------------------------------------------

def is_checked(obj: podspecs.Obj) -> bool:
    """Whether the rules concern this object: a pod-bearing kind, a Service or an Ingress."""
    from tenantry.admission import ingress, services

    return podspecs.is_pod_bearing(obj) or services.is_service(obj) or ingress.is_ingress(obj)


def check_objects(objects: Sequence[Located], *,
                  pod_security: tenant.PodSecurity | None = None,
                  quota: tenant.Quota | None = None,
                  namespace: str | None = None,
                  errors: Sequence[str] = (),
                  ingress_policy: tenant.IngressPolicy | None = None) -> Report:
    """Judge every object as admission would. `namespace` stands for objects that name none
    (as `kubectl apply -n` would place them); it only matters to exemptions by namespace.
    Ingresses are judged without the cluster: hosts other tenants serve are not known here."""
    from tenantry.admission import ingress, policy

    reports = []
    skipped = 0
    for located in objects:
        if not is_checked(located.obj):
            skipped += 1
            continue
        own = mapping(located.obj.get("metadata")).get("namespace")
        if ingress.is_ingress(located.obj):
            found = ingress.check_ingress(
                located.obj, ingress_policy, namespace=own if isinstance(own, str) and own
                else namespace)
            reports.append(ObjectReport(located, tuple(found), ()))
            continue
        decision = policy.evaluate(located.obj, pod_security, quota=quota,
                                   namespace=own if isinstance(own, str) else namespace)
        reports.append(ObjectReport(located, decision.violations, decision.exempted))
    return Report(tuple(reports), skipped, tuple(errors))


# -- rendering (pure) ----------------------------------------------------------------------------

def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def render_text(report: Report) -> str:
    """A report for people: each object with a finding, its violations, a summary line."""
    lines: list[str] = []
    for obj in report.objects:
        if not obj.violations and not obj.exempted:
            continue
        lines.append(f"{obj.located.where}: {obj.kind} {obj.name}")
        lines += [f"  {v}" for v in obj.violations]
        lines += [f"  exempt: {e.violation} (exemption: {e.exemption.reason})"
                  for e in obj.exempted]
    lines += [f"error: {error}" for error in report.errors]
    flagged = sum(1 for o in report.objects if o.violations)
    summary = (f"{_count(len(report.objects), 'object')} checked, {flagged} with violations, "
               f"{_count(report.violation_count, 'violation')}")
    exempted = sum(len(o.exempted) for o in report.objects)
    if exempted:
        summary += f", {exempted} exempted"
    if report.skipped:
        summary += f"; {_count(report.skipped, 'object')} of other kinds skipped"
    if report.errors:
        summary += f"; {_count(len(report.errors), 'error')}"
    lines.append(summary)
    return "\n".join(lines) + "\n"


def render_json(report: Report) -> str:
    """The report for machines."""
    return json.dumps({
        "objects": [o.to_dict() for o in report.objects],
        "summary": {
            "checked": len(report.objects),
            "withViolations": sum(1 for o in report.objects if o.violations),
            "violations": report.violation_count,
            "exempted": sum(len(o.exempted) for o in report.objects),
            "skipped": report.skipped,
            "errors": len(report.errors),
        },
        "errors": list(report.errors),
    }, indent=2) + "\n"


# -- I/O -----------------------------------------------------------------------------------------

def _manifest_files(directory: Path) -> Iterator[Path]:
    """Manifests under a directory, sorted, skipping hidden files and folders (.git, ...)."""
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.is_file() and path.suffix in MANIFEST_SUFFIXES:
            yield path


def read_sources(paths: Sequence[str], stdin: TextIO) -> tuple[list[Source], list[str]]:
    """The text of every input; `-` is stdin; directories are searched recursively."""
    sources: list[Source] = []
    errors: list[str] = []
    for raw in paths:
        if raw == STDIN:
            sources.append(Source("<stdin>", stdin.read()))
            continue
        path = Path(raw)
        files = list(_manifest_files(path)) if path.is_dir() else [path]
        for file in files:
            try:
                sources.append(Source(str(file), file.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError) as error:
                errors.append(f"{file}: cannot read: {error}")
    return sources, errors


def load_tenant(path: Path) -> tenant.TenantSpec:
    """The spec of the first Tenant in a manifest file (OSError if it cannot be read, ValueError
    if it holds no valid Tenant)."""
    import pydantic
    import yaml

    from tenantry.model import tenant

    try:
        documents = _load_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML: {error}") from None
    for document in documents:
        if isinstance(document, dict) and document.get("kind") == tenant.KIND:
            try:
                return tenant.TenantSpec.model_validate(document.get("spec") or {})
            except pydantic.ValidationError as error:
                raise ValueError(f"{path}: invalid Tenant spec: {error}") from None
    raise ValueError(f"{path}: no Tenant in this file")


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `check` subcommand to an argparse subparsers object (`add_subparsers()`)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "check", help="check manifests against the admission rules, offline",
        description="Run Tenantry's admission rules (Pod Security restricted plus Tenantry's "
                    "hardening rules, and the Service rules) on manifests: YAML or JSON files, "
                    "directories (recursively), or - for stdin (e.g. `kustomize build | "
                    "tenantry check -`). Exit status 1 when anything is violated, 2 when an "
                    "input cannot be read.")
    parser.add_argument("paths", nargs="+", metavar="FILE|DIR|-",
                        help="manifest files, directories, or - for stdin")
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text",
                        help="report format (default: text)")
    parser.add_argument("--tenant", metavar="FILE",
                        help="a Tenant manifest whose exemptions, quota and "
                             "allowedHostnames apply "
                             "(default: none, and a Tenant's default quota)")
    parser.add_argument("-n", "--namespace",
                        help="namespace of objects that name none, for exemptions by namespace")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace, *, stdin: TextIO | None = None, stdout: TextIO | None = None,
        stderr: TextIO | None = None) -> int:
    """Carry out `tenantry check`; returns the exit status."""
    stdin = stdin if stdin is not None else sys.stdin
    stdout = stdout if stdout is not None else sys.stdout
    stderr = stderr if stderr is not None else sys.stderr
    pod_security = quota = ingress_policy = None
    if args.tenant:
        try:
            spec = load_tenant(Path(args.tenant))
        except (OSError, ValueError) as error:
            print(f"error: {error}", file=stderr)
            return EXIT_ERROR
        pod_security, quota, ingress_policy = spec.pod_security, spec.quota, spec.ingress
    sources, errors = read_sources(args.paths, stdin)
    objects: list[Located] = []
    for source in sources:
        found, failed = parse(source)
        objects += found
        errors += failed
    report = check_objects(objects, pod_security=pod_security, quota=quota,
                           namespace=args.namespace, errors=errors,
                           ingress_policy=ingress_policy)
    stdout.write(render_json(report) if args.output == "json" else render_text(report))
    return report.exit_code
