"""What a user sends to submit a job: the body of `POST /services/jobs/api/jobs`, checked field by field.

Types, sizes and ranges are checked here (pydantic, unknown fields refused); what depends on the facility and
on the user (their groups, the images, the accelerators a group may use) is checked by `policy.plan`.

    {"command": ["python", "train.py", "--epochs", "3"], "group": "ml", "accelerator": {"kind": "mig",
     "name": "1g.10gb", "count": 1}, "cpu": "2", "memory": "8Gi", "image": "ml", "hours": 2}
    {"notebook": "analysis/fit.ipynb", "parameters": {"alpha": 0.5}, "offload": "hpc"}
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

# Enough for any real command line; a body is refused above MAX_BODY_BYTES anyway.
MAX_ARGS = 256
MAX_ARG_CHARS = 4096
MAX_PARAMETERS = 64
Name = Annotated[str, StringConstraints(min_length=1, max_length=63)]
Quantity = Annotated[str, StringConstraints(min_length=1, max_length=32)]
Arg = Annotated[str, StringConstraints(max_length=MAX_ARG_CHARS)]
ParamName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
ParamValue = Annotated[str, StringConstraints(max_length=MAX_ARG_CHARS)] | int | float | bool | None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class AcceleratorAsk(_Strict):
    kind: Literal["gpu", "mig", "fpga"]
    # An accelerator of the facility file (t4, mig-1g-10gb) or, for MIG, the slice profile (1g.10gb).
    name: Name
    count: int = Field(default=1, ge=1, le=64)


class JobRequest(_Strict):
    command: list[Arg] | None = Field(default=None, min_length=1, max_length=MAX_ARGS)
    # A notebook in the user's home (a path relative to it), run headless by papermill.
    notebook: Annotated[str, StringConstraints(min_length=1, max_length=1024)] | None = None
    parameters: dict[ParamName, ParamValue] = Field(default_factory=dict, max_length=MAX_PARAMETERS)
    group: Name | None = None
    image: Name | None = None
    cpu: Quantity | None = None
    memory: Quantity | None = None
    accelerator: AcceleratorAsk | None = None
    offload: Name | None = None
    hours: float | None = Field(default=None, allow_inf_nan=False)

    @model_validator(mode="after")
    def _one_thing_to_run(self) -> JobRequest:
        if (self.command is None) == (self.notebook is None):
            raise ValueError('give either "command" (a list of arguments) or "notebook" (a path in your home)')
        if self.parameters and self.notebook is None:
            raise ValueError('"parameters" are for notebook jobs; pass arguments to a command in "command"')
        if self.command is not None and not self.command[0].strip():
            raise ValueError('"command" must start with the program to run')
        return self


def readable(e: ValidationError) -> str:
    """pydantic's errors as one line a person can act on (field path: what is wrong), without echoing input."""
    parts = []
    for err in e.errors(include_input=False, include_url=False)[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
