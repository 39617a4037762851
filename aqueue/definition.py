"""Job definitions: a decorated ``async def`` plus its kind, defaults and argument schema.

Arguments are validated by pydantic from the function's signature, once at enqueue
time (nothing is written when they are wrong) and again when the job runs, from the
stored JSON. The schema is a ``TypedDict`` built from the parameters, so parameter
names never clash with pydantic's own attributes and a parameter left out keeps the
function's own default when the job runs.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable, Mapping
from typing import (
    Any,
    Concatenate,
    Generic,
    NotRequired,
    ParamSpec,
    Protocol,
    Required,
    TypeVar,
    overload,
)

import pydantic
import pydantic_core
import typing_extensions
from typing_extensions import Unpack

from .chunk import Chunk, chunk_item, item_stand_in
from .context import JobContext
from .errors import ConfigurationError, InvalidJobArgs, InvalidOption
from .jobs import Job, Outcome
from .options import EnqueueOptions, Options
from .unique import Unique
from .validate import json_nul_problems, validate_name

__all__ = [
    "AfterProcessHook",
    "ArgsSchema",
    "ChunkDecorator",
    "ConfiguredJob",
    "Inserter",
    "JobDecorator",
    "JobDefinition",
    "JobRequest",
    "dump_unvalidated",
    "require_coroutine_function",
]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
AfterProcessHook = Callable[[Job, Outcome], Awaitable[None]]
H = TypeVar("H", bound=AfterProcessHook)


def require_coroutine_function(fn: object, what: str) -> None:
    if not inspect.iscoroutinefunction(fn):
        raise ConfigurationError(f"{what} {fn!r} must be an 'async def' function")


class ArgsSchema:
    """Validates a job's keyword arguments against its function's signature."""

    def __init__(self, fn: Callable[..., Any], kind: str) -> None:
        self.kind = kind
        try:
            hints = typing.get_type_hints(fn, include_extras=True)
        except (NameError, TypeError) as exc:
            raise ConfigurationError(f"job {kind!r}: cannot resolve annotations: {exc}") from None
        signature = inspect.signature(fn)
        params = list(signature.parameters.values())
        self.wants_context = bool(params) and hints.get(params[0].name) is JobContext
        if self.wants_context:
            params = params[1:]
        fields: dict[str, Any] = {}
        allow_extra = False
        for param in params:
            if param.kind in (param.POSITIONAL_ONLY, param.VAR_POSITIONAL):
                raise ConfigurationError(
                    f"job {kind!r}: parameter {param.name!r} must be passable by keyword "
                    "(jobs are stored with named arguments)"
                )
            if param.kind is param.VAR_KEYWORD:
                allow_extra = True
                continue
            annotation = hints.get(param.name, Any)
            if annotation is JobContext:
                raise ConfigurationError(
                    f"job {kind!r}: only the first parameter may be the JobContext"
                )
            wrapper = Required if param.default is param.empty else NotRequired
            fields[param.name] = wrapper[annotation]
        self.signature = signature.replace(parameters=params)
        self.accepts_any = allow_extra
        self.names = tuple(fields)
        typed_dict: Any = typing_extensions.TypedDict(f"{kind}_args", fields)  # type: ignore[misc]
        # pydantic reads a TypedDict's config from this attribute.
        config = pydantic.ConfigDict(extra="allow" if allow_extra else "forbid")
        setattr(typed_dict, "__pydantic_config__", config)  # noqa: B010 - not a TypedDict key
        try:
            self._adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(typed_dict)
            # The compiled validator and serializer, called directly: the TypeAdapter's
            # own methods add about a microsecond per call, once per job enqueued.
            self._validate = self._adapter.validator.validate_python
            self._to_json = self._adapter.serializer.to_json
            self._validate_json = self._adapter.validator.validate_json
        except pydantic.PydanticUserError as exc:
            raise ConfigurationError(f"job {kind!r}: unsupported parameter type: {exc}") from None
        except pydantic.errors.PydanticSchemaGenerationError as exc:
            raise ConfigurationError(f"job {kind!r}: unsupported parameter type: {exc}") from None

    def bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        if not args:
            return dict(kwargs)
        try:
            bound = self.signature.bind_partial(*args, **kwargs)
        except TypeError as exc:
            raise InvalidJobArgs(self.kind, [("*args", str(exc))]) from None
        result = dict(bound.arguments)
        extra = result.pop(
            next(
                (p.name for p in self.signature.parameters.values() if p.kind is p.VAR_KEYWORD), ""
            ),
            None,
        )
        if extra:
            result.update(extra)
        return result

    def dump(self, kwargs: Mapping[str, Any]) -> str:
        """Validate ``kwargs`` and return their JSON text, or raise ``InvalidJobArgs``."""
        # dict first: the ABC check costs a few hundred nanoseconds, once per job.
        if not isinstance(kwargs, dict) and not isinstance(kwargs, Mapping):
            raise InvalidJobArgs(
                self.kind, [("args", f"must be a mapping, got {type(kwargs).__name__}")]
            )
        try:
            validated = self._validate(kwargs)
            text = self._to_json(validated).decode()
        except pydantic.ValidationError as exc:
            raise InvalidJobArgs(self.kind, _describe(exc)) from None
        except pydantic_core.PydanticSerializationError as exc:
            raise InvalidJobArgs(self.kind, [("args", f"not JSON-serialisable: {exc}")]) from None
        problems = json_nul_problems(text, "args")
        if problems:
            raise InvalidJobArgs(self.kind, problems)
        return text

    def load(self, text: str) -> dict[str, Any]:
        try:
            loaded: dict[str, Any] = self._validate_json(text)
            return loaded
        except pydantic.ValidationError as exc:
            raise InvalidJobArgs(self.kind, _describe(exc)) from None


def dump_unvalidated(kind: str, args: object) -> str:
    """JSON text of ``args`` for a kind no job here defines (``allow_unknown``): only
    checked to be a JSON object PostgreSQL can store."""
    if args is not None and not isinstance(args, Mapping):
        raise InvalidJobArgs(kind, [("args", "must be a mapping")])
    try:
        text = pydantic_core.to_json(dict(args or {}), inf_nan_mode="null").decode()
    except pydantic_core.PydanticSerializationError as exc:
        raise InvalidJobArgs(kind, [("args", f"not JSON-serialisable: {exc}")]) from None
    problems = json_nul_problems(text, "args")
    if problems:
        raise InvalidJobArgs(kind, problems)
    return text


def _describe(exc: pydantic.ValidationError) -> list[tuple[str, str]]:
    return [(".".join(str(p) for p in err["loc"]) or "args", err["msg"]) for err in exc.errors()]


class JobRequest:
    """A job built but not yet written: what ``enqueue_many`` takes. Make them with
    ``job.build(...)`` or ``app.build(kind, args)``; built by hand, ``args_json`` is
    checked to be one JSON object PostgreSQL can store."""

    __slots__ = ("args_json", "kind", "options", "partition_key")

    def __init__(self, kind: str, args_json: str, options: Options) -> None:
        try:
            parsed = pydantic_core.from_json(args_json) if isinstance(args_json, str) else None
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict) or json_nul_problems(args_json, "args"):
            raise InvalidJobArgs(kind, [("args", "must be the JSON text of an object")])
        self._set(kind, args_json, options, options.partition_key)

    @classmethod
    def checked(
        cls, kind: str, args_json: str, options: Options, partition_key: str | None = None
    ) -> JobRequest:
        """For aqueue's own builders, whose ``args_json`` was just produced and validated;
        ``partition_key`` is the one ``partition_by`` gave, unless the options set one."""
        request: JobRequest = object.__new__(cls)
        request.kind = kind
        request.args_json = args_json
        request.options = options
        request.partition_key = options.partition_key or partition_key
        return request

    def _set(self, kind: str, args_json: str, options: Options, partition_key: str | None) -> None:
        self.kind = kind
        self.args_json = args_json
        self.options = options
        self.partition_key = partition_key

    def __repr__(self) -> str:
        return f"JobRequest(kind={self.kind!r}, args={self.args_json})"


#: Where a job's partition key comes from: the name of one of its parameters, or a
#: function of its arguments (a dict) returning the key.
PartitionBy = str | Callable[[dict[str, Any]], object]


def _check_partition_by(
    kind: str, by: PartitionBy | None, schema: ArgsSchema
) -> PartitionBy | None:
    if by is None or callable(by):
        return by
    if not isinstance(by, str) or (by not in schema.names and not schema.accepts_any):
        raise ConfigurationError(
            f"job {kind!r}: partition_by={by!r} names no parameter of the function "
            f"(parameters: {', '.join(schema.names) or 'none'})"
        )
    return by


class Inserter(Protocol):
    """What a definition enqueues through (the App's ``enqueue.Enqueuer``)."""

    async def enqueue_request(self, request: JobRequest) -> Job: ...


class _Enqueuer(Generic[P, R]):
    """What ``JobDefinition`` and its ``.options()`` view share: build and enqueue."""

    definition: JobDefinition[P, R]
    _options: Options

    def build(self, *args: P.args, **kwargs: P.kwargs) -> JobRequest:
        definition = self.definition
        schema = definition.schema
        bound = schema.bind(args, kwargs) if args else kwargs  # **kwargs is a fresh dict
        args_json = schema.dump(bound)
        key = None
        if definition.partition_by is not None and self._options.partition_key is None:
            key = definition.partition_key_of(bound)
        return JobRequest.checked(definition.kind, args_json, self._options, key)

    async def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        request = self.build(*args, **kwargs)
        return await self.definition.inserter.enqueue_request(request)

    def options(self, **options: Unpack[EnqueueOptions]) -> ConfiguredJob[P, R]:
        """This job with per-enqueue options (see ``aqueue.options.EnqueueOptions``)."""
        override = Options.create(**options)
        if isinstance(override.unique, Unique):
            schema = self.definition.schema
            override.unique.check_arguments(self.definition.kind, schema.names, schema.accepts_any)
        return ConfiguredJob(self.definition, self._options.merged(override))


class ConfiguredJob(_Enqueuer[P, R]):
    """A job with per-enqueue options applied: ``send_email.options(queue="bulk")``."""

    def __init__(self, definition: JobDefinition[P, R], options: Options) -> None:
        self.definition = definition
        self._options = options


class JobDefinition(_Enqueuer[P, R]):
    """A registered job. Made by ``@app.job``; call ``.enqueue(...)`` to schedule a run."""

    def __init__(
        self,
        inserter: Inserter,
        fn: Callable[..., Awaitable[R]],
        *,
        kind: str,
        aliases: tuple[str, ...],
        defaults: Options,
        partition_by: PartitionBy | None = None,
        chunk: Chunk | None = None,
    ) -> None:
        require_coroutine_function(fn, f"job {kind!r}:")
        self.inserter = inserter
        self.fn = fn
        self.kind = kind
        self.aliases = aliases
        self.definition = self
        self.defaults = defaults
        self._options = Options()
        #: Set for a chunk job: its items run in lists (aqueue/chunk.py).
        self.chunk = chunk
        #: A chunk job's one parameter: the list of items is passed under this name.
        self.chunk_parameter = ""
        if chunk is not None:
            if not isinstance(chunk, Chunk):
                raise ConfigurationError(
                    f"job {kind!r}: chunk: must be an aqueue.Chunk(size=, timeout=), got {chunk!r}"
                )
            # What is enqueued and validated is one item, not the list the function takes.
            self.chunk_parameter, item_type = chunk_item(fn, kind)
            self.schema = ArgsSchema(item_stand_in(self.chunk_parameter, item_type), kind)
        else:
            self.schema = ArgsSchema(fn, kind)
        if isinstance(defaults.unique, Unique):
            defaults.unique.check_arguments(kind, self.schema.names, self.schema.accepts_any)
        self.partition_by = _check_partition_by(kind, partition_by, self.schema)
        self.hooks: list[AfterProcessHook] = []
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", kind)

    def partition_key_of(self, args: Mapping[str, Any]) -> str | None:
        """This job's flow-control partition key for these arguments (``partition_by``)."""
        by = self.partition_by
        if by is None:
            return None
        if callable(by):
            value = by(dict(args))
        elif by in args:
            value = args[by]
        else:  # left out: the function's own default is the key
            param = self.schema.signature.parameters.get(by)
            value = None if param is None or param.default is param.empty else param.default
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise InvalidOption(
                "partition_key", f"partition_by gave {value!r}: a key is a short string"
            )
        return validate_name("partition_key", str(value))

    def after_process(self, hook: H) -> H:
        """Register ``async def hook(job, outcome)`` for this kind, run after each attempt."""
        require_coroutine_function(hook, "after_process hook")
        self.hooks.append(hook)
        return hook

    def __repr__(self) -> str:
        return f"<JobDefinition {self.kind!r} queue={self.defaults.queue or 'default'!r}>"


class JobDecorator(Protocol):
    """What ``@app.job(...)`` returns: a JobContext first parameter is not an argument."""

    @overload
    def __call__(
        self, fn: Callable[Concatenate[JobContext, P], Awaitable[R]], /
    ) -> JobDefinition[P, R]: ...

    @overload
    def __call__(self, fn: Callable[P, Awaitable[R]], /) -> JobDefinition[P, R]: ...


class ChunkDecorator(Protocol):
    """What ``@app.job(chunk=...)`` returns: the function takes a list, and the job is
    enqueued one item at a time (``index.enqueue(doc)`` is type-checked)."""

    def __call__(self, fn: Callable[[list[T]], Awaitable[R]], /) -> JobDefinition[[T], R]: ...
