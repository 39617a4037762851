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
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import (
    TYPE_CHECKING,
    Any,
    Generic,
    Literal,
    NotRequired,
    ParamSpec,
    Required,
    TypeVar,
)

import pydantic
import pydantic_core
import typing_extensions

from .errors import ConfigurationError, InvalidJobArgs
from .jobs import Job, JobContext, Outcome
from .options import Backoff, Options, json_nul_problems
from .unique import Unique

if TYPE_CHECKING:
    from .app import App

__all__ = ["AfterProcessHook", "ArgsSchema", "ConfiguredJob", "JobDefinition", "JobRequest"]

P = ParamSpec("P")
R = TypeVar("R")
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
        if not isinstance(kwargs, Mapping):
            raise InvalidJobArgs(
                self.kind, [("args", f"must be a mapping, got {type(kwargs).__name__}")]
            )
        try:
            validated = self._adapter.validate_python(kwargs)
            text = self._adapter.dump_json(validated).decode()
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
            loaded: dict[str, Any] = self._adapter.validate_json(text)
            return loaded
        except pydantic.ValidationError as exc:
            raise InvalidJobArgs(self.kind, _describe(exc)) from None


def _describe(exc: pydantic.ValidationError) -> list[tuple[str, str]]:
    return [(".".join(str(p) for p in err["loc"]) or "args", err["msg"]) for err in exc.errors()]


class JobRequest:
    """A job built but not yet written: what ``enqueue_many`` takes."""

    __slots__ = ("args_json", "kind", "options")

    def __init__(self, kind: str, args_json: str, options: Options) -> None:
        self.kind = kind
        self.args_json = args_json
        self.options = options

    def __repr__(self) -> str:
        return f"JobRequest(kind={self.kind!r}, args={self.args_json})"


class _Enqueuer(Generic[P, R]):
    """What ``JobDefinition`` and its ``.options()`` view share: build and enqueue."""

    definition: JobDefinition[P, R]
    _options: Options

    def build(self, *args: P.args, **kwargs: P.kwargs) -> JobRequest:
        schema = self.definition.schema
        args_json = schema.dump(schema.bind(args, kwargs))
        return JobRequest(self.definition.kind, args_json, self._options)

    async def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        request = self.build(*args, **kwargs)
        return await self.definition.app.enqueue_request(request)

    def options(
        self,
        *,
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        timeout: float | timedelta | None = None,
        scheduled_at: datetime | None = None,
        schedule_in: float | timedelta | None = None,
        tags: Sequence[str] | None = None,
        meta: Mapping[str, Any] | None = None,
        retry: Backoff | None = None,
        conn: Any = None,
        unique: Unique | Literal[False] | None = None,
    ) -> ConfiguredJob[P, R]:
        if isinstance(unique, Unique):
            schema = self.definition.schema
            unique.check_arguments(self.definition.kind, schema.names, schema.accepts_any)
        override = Options.create(
            queue=queue,
            priority=priority,
            max_attempts=max_attempts,
            timeout=timeout,
            scheduled_at=scheduled_at,
            schedule_in=schedule_in,
            tags=tags,
            meta=meta,
            retry=retry,
            conn=conn,
            unique=unique,
        )
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
        app: App,
        fn: Callable[..., Awaitable[R]],
        *,
        kind: str,
        aliases: tuple[str, ...],
        defaults: Options,
    ) -> None:
        if not inspect.iscoroutinefunction(fn):
            raise ConfigurationError(f"job {kind!r}: {fn!r} must be an 'async def' function")
        self.app = app
        self.fn = fn
        self.kind = kind
        self.aliases = aliases
        self.definition = self
        self.defaults = defaults
        self._options = Options()
        self.schema = ArgsSchema(fn, kind)
        if isinstance(defaults.unique, Unique):
            defaults.unique.check_arguments(kind, self.schema.names, self.schema.accepts_any)
        self.hooks: list[AfterProcessHook] = []
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", kind)

    def after_process(self, hook: H) -> H:
        """Register ``async def hook(job, outcome)`` for this kind, run after each attempt."""
        require_coroutine_function(hook, "after_process hook")
        self.hooks.append(hook)
        return hook

    def __repr__(self) -> str:
        return f"<JobDefinition {self.kind!r} queue={self.defaults.queue or 'default'!r}>"
