"""The kdsearch spec: a YAML file loaded with ``yaml.safe_load`` into typed dataclasses.

Every field is checked on load; a bad field raises :class:`SpecError` naming the field
by its dotted path and saying why, so the CLI can print one line and exit non-zero.

Three modules, in the order data flows through them: :mod:`.schema` (the dataclasses and
their checks), :mod:`.paths` (which fields name paths, made absolute on load) and
:mod:`.loading` (YAML, overrides, search entries merged over their sections, writing a spec
back). The names below are the package's surface.
"""

from kdsearch.search.ranges import RangeSpec
from kdsearch.spec.loading import (
    apply_override,
    dump_spec,
    from_dict,
    load_spec,
    parse_raw,
    parse_yaml,
    spec_from_raw,
    spec_from_text,
)
from kdsearch.spec.paths import PathKind, resolve_paths, walk_paths
from kdsearch.spec.schema import (
    MAX_CONFIRM_SEEDS,
    MAX_LENGTH,
    MAX_MEMBERS,
    MAX_SEED,
    AshaSpec,
    DataSpec,
    DistillSpec,
    OptimSpec,
    ResourcesSpec,
    SearchSpec,
    Spec,
    StudentSpec,
    TeacherSpec,
    TokenizerSpec,
    cell_id,
    check_space,
    with_knobs,
)

__all__ = [
    "MAX_CONFIRM_SEEDS", "MAX_LENGTH", "MAX_MEMBERS", "MAX_SEED", "AshaSpec", "DataSpec", "DistillSpec", "OptimSpec", "PathKind",
    "RangeSpec", "ResourcesSpec", "SearchSpec", "Spec", "StudentSpec", "TeacherSpec", "TokenizerSpec", "apply_override",
    "cell_id", "check_space", "dump_spec", "from_dict", "load_spec", "parse_raw", "parse_yaml", "resolve_paths", "spec_from_raw",
    "spec_from_text", "walk_paths", "with_knobs",
]
