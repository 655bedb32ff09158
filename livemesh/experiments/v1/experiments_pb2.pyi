import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GuardrailMetric(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GUARDRAIL_METRIC_UNSPECIFIED: _ClassVar[GuardrailMetric]
    GUARDRAIL_METRIC_REBUFFER_RATIO: _ClassVar[GuardrailMetric]
    GUARDRAIL_METRIC_STARTUP_MS: _ClassVar[GuardrailMetric]
    GUARDRAIL_METRIC_ERROR_RATE: _ClassVar[GuardrailMetric]

class ExperimentState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPERIMENT_STATE_UNSPECIFIED: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_DRAFT: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_RUNNING: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_STOPPED: _ClassVar[ExperimentState]
GUARDRAIL_METRIC_UNSPECIFIED: GuardrailMetric
GUARDRAIL_METRIC_REBUFFER_RATIO: GuardrailMetric
GUARDRAIL_METRIC_STARTUP_MS: GuardrailMetric
GUARDRAIL_METRIC_ERROR_RATE: GuardrailMetric
EXPERIMENT_STATE_UNSPECIFIED: ExperimentState
EXPERIMENT_STATE_DRAFT: ExperimentState
EXPERIMENT_STATE_RUNNING: ExperimentState
EXPERIMENT_STATE_STOPPED: ExperimentState

class Cell(_message.Message):
    __slots__ = ("name", "weight", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    weight: int
    value: str
    def __init__(self, name: _Optional[str] = ..., weight: _Optional[int] = ..., value: _Optional[str] = ...) -> None: ...

class Guardrail(_message.Message):
    __slots__ = ("metric", "threshold", "min_samples")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MIN_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    metric: GuardrailMetric
    threshold: float
    min_samples: int
    def __init__(self, metric: _Optional[_Union[GuardrailMetric, str]] = ..., threshold: _Optional[float] = ..., min_samples: _Optional[int] = ...) -> None: ...

class Experiment(_message.Message):
    __slots__ = ("name", "display_name", "decision", "cells", "guardrails", "salt", "state", "stop_reason", "create_time", "start_time", "stop_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    CELLS_FIELD_NUMBER: _ClassVar[int]
    GUARDRAILS_FIELD_NUMBER: _ClassVar[int]
    SALT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STOP_REASON_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    STOP_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    display_name: str
    decision: str
    cells: _containers.RepeatedCompositeFieldContainer[Cell]
    guardrails: _containers.RepeatedCompositeFieldContainer[Guardrail]
    salt: str
    state: ExperimentState
    stop_reason: str
    create_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    stop_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., display_name: _Optional[str] = ..., decision: _Optional[str] = ..., cells: _Optional[_Iterable[_Union[Cell, _Mapping]]] = ..., guardrails: _Optional[_Iterable[_Union[Guardrail, _Mapping]]] = ..., salt: _Optional[str] = ..., state: _Optional[_Union[ExperimentState, str]] = ..., stop_reason: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., stop_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateExperimentRequest(_message.Message):
    __slots__ = ("experiment_id", "experiment")
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    experiment: Experiment
    def __init__(self, experiment_id: _Optional[str] = ..., experiment: _Optional[_Union[Experiment, _Mapping]] = ...) -> None: ...

class CreateExperimentResponse(_message.Message):
    __slots__ = ("experiment",)
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    experiment: Experiment
    def __init__(self, experiment: _Optional[_Union[Experiment, _Mapping]] = ...) -> None: ...

class StartExperimentRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class StartExperimentResponse(_message.Message):
    __slots__ = ("experiment",)
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    experiment: Experiment
    def __init__(self, experiment: _Optional[_Union[Experiment, _Mapping]] = ...) -> None: ...

class StopExperimentRequest(_message.Message):
    __slots__ = ("name", "reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    reason: str
    def __init__(self, name: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class StopExperimentResponse(_message.Message):
    __slots__ = ("experiment",)
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    experiment: Experiment
    def __init__(self, experiment: _Optional[_Union[Experiment, _Mapping]] = ...) -> None: ...

class GetExperimentRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetExperimentResponse(_message.Message):
    __slots__ = ("experiment",)
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    experiment: Experiment
    def __init__(self, experiment: _Optional[_Union[Experiment, _Mapping]] = ...) -> None: ...

class ListExperimentsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListExperimentsResponse(_message.Message):
    __slots__ = ("experiments", "next_page_token")
    EXPERIMENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    experiments: _containers.RepeatedCompositeFieldContainer[Experiment]
    next_page_token: str
    def __init__(self, experiments: _Optional[_Iterable[_Union[Experiment, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class AssignCellRequest(_message.Message):
    __slots__ = ("decision", "experiment", "account", "session")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    decision: str
    experiment: str
    account: str
    session: str
    def __init__(self, decision: _Optional[str] = ..., experiment: _Optional[str] = ..., account: _Optional[str] = ..., session: _Optional[str] = ...) -> None: ...

class AssignCellResponse(_message.Message):
    __slots__ = ("in_experiment", "experiment", "cell", "value")
    IN_EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    CELL_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    in_experiment: bool
    experiment: str
    cell: str
    value: str
    def __init__(self, in_experiment: _Optional[bool] = ..., experiment: _Optional[str] = ..., cell: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class LogExposureRequest(_message.Message):
    __slots__ = ("experiment", "account", "cell", "session")
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    CELL_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    experiment: str
    account: str
    cell: str
    session: str
    def __init__(self, experiment: _Optional[str] = ..., account: _Optional[str] = ..., cell: _Optional[str] = ..., session: _Optional[str] = ...) -> None: ...

class LogExposureResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Estimate(_message.Message):
    __slots__ = ("value", "low", "high", "samples", "delta", "delta_low", "delta_high")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    DELTA_LOW_FIELD_NUMBER: _ClassVar[int]
    DELTA_HIGH_FIELD_NUMBER: _ClassVar[int]
    value: float
    low: float
    high: float
    samples: int
    delta: float
    delta_low: float
    delta_high: float
    def __init__(self, value: _Optional[float] = ..., low: _Optional[float] = ..., high: _Optional[float] = ..., samples: _Optional[int] = ..., delta: _Optional[float] = ..., delta_low: _Optional[float] = ..., delta_high: _Optional[float] = ...) -> None: ...

class CellReadout(_message.Message):
    __slots__ = ("cell", "weight", "accounts", "exposures", "expected_share", "observed_share", "rebuffer_ratio", "startup_ms", "error_rate")
    CELL_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    ACCOUNTS_FIELD_NUMBER: _ClassVar[int]
    EXPOSURES_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_SHARE_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_SHARE_FIELD_NUMBER: _ClassVar[int]
    REBUFFER_RATIO_FIELD_NUMBER: _ClassVar[int]
    STARTUP_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    cell: str
    weight: int
    accounts: int
    exposures: int
    expected_share: float
    observed_share: float
    rebuffer_ratio: Estimate
    startup_ms: Estimate
    error_rate: Estimate
    def __init__(self, cell: _Optional[str] = ..., weight: _Optional[int] = ..., accounts: _Optional[int] = ..., exposures: _Optional[int] = ..., expected_share: _Optional[float] = ..., observed_share: _Optional[float] = ..., rebuffer_ratio: _Optional[_Union[Estimate, _Mapping]] = ..., startup_ms: _Optional[_Union[Estimate, _Mapping]] = ..., error_rate: _Optional[_Union[Estimate, _Mapping]] = ...) -> None: ...

class SampleRatio(_message.Message):
    __slots__ = ("chi_square", "p_value", "mismatch")
    CHI_SQUARE_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    MISMATCH_FIELD_NUMBER: _ClassVar[int]
    chi_square: float
    p_value: float
    mismatch: bool
    def __init__(self, chi_square: _Optional[float] = ..., p_value: _Optional[float] = ..., mismatch: _Optional[bool] = ...) -> None: ...

class GetReadoutRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetReadoutResponse(_message.Message):
    __slots__ = ("experiment", "cells", "sample_ratio")
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    CELLS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATIO_FIELD_NUMBER: _ClassVar[int]
    experiment: Experiment
    cells: _containers.RepeatedCompositeFieldContainer[CellReadout]
    sample_ratio: SampleRatio
    def __init__(self, experiment: _Optional[_Union[Experiment, _Mapping]] = ..., cells: _Optional[_Iterable[_Union[CellReadout, _Mapping]]] = ..., sample_ratio: _Optional[_Union[SampleRatio, _Mapping]] = ...) -> None: ...
