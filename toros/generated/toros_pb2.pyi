import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ImageType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMAGE_TYPE_UNSPECIFIED: _ClassVar[ImageType]
    IMAGE_TYPE_BIAS: _ClassVar[ImageType]
    IMAGE_TYPE_DARK: _ClassVar[ImageType]
    IMAGE_TYPE_FLAT: _ClassVar[ImageType]
    IMAGE_TYPE_LIGHT: _ClassVar[ImageType]

class FlatSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FLAT_SOURCE_UNSPECIFIED: _ClassVar[FlatSource]
    FLAT_SOURCE_SKY: _ClassVar[FlatSource]
    FLAT_SOURCE_DOME: _ClassVar[FlatSource]

class NightStep(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NIGHT_STEP_UNSPECIFIED: _ClassVar[NightStep]
    NIGHT_STEP_PREPARE: _ClassVar[NightStep]
    NIGHT_STEP_OPEN: _ClassVar[NightStep]
    NIGHT_STEP_CLOSE: _ClassVar[NightStep]
    NIGHT_STEP_RESUME: _ClassVar[NightStep]

class DomeAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DOME_ACTION_UNSPECIFIED: _ClassVar[DomeAction]
    DOME_ACTION_OPEN: _ClassVar[DomeAction]
    DOME_ACTION_CLOSE: _ClassVar[DomeAction]
    DOME_ACTION_SLEW: _ClassVar[DomeAction]
    DOME_ACTION_PARK: _ClassVar[DomeAction]

class AlertFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALERT_FORMAT_UNSPECIFIED: _ClassVar[AlertFormat]
    ALERT_FORMAT_VOEVENT: _ClassVar[AlertFormat]
    ALERT_FORMAT_GWALERT_JSON: _ClassVar[AlertFormat]
    ALERT_FORMAT_GWALERT_AVRO: _ClassVar[AlertFormat]

class WorkOrderState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORK_ORDER_STATE_UNSPECIFIED: _ClassVar[WorkOrderState]
    WORK_ORDER_STATE_QUEUED: _ClassVar[WorkOrderState]
    WORK_ORDER_STATE_RUNNING: _ClassVar[WorkOrderState]
    WORK_ORDER_STATE_DONE: _ClassVar[WorkOrderState]
    WORK_ORDER_STATE_FAILED: _ClassVar[WorkOrderState]
    WORK_ORDER_STATE_CANCELLED: _ClassVar[WorkOrderState]

class DeviceState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEVICE_STATE_UNSPECIFIED: _ClassVar[DeviceState]
    DEVICE_STATE_IDLE: _ClassVar[DeviceState]
    DEVICE_STATE_BUSY: _ClassVar[DeviceState]
    DEVICE_STATE_PARKED: _ClassVar[DeviceState]
    DEVICE_STATE_FAULT: _ClassVar[DeviceState]
    DEVICE_STATE_DISCONNECTED: _ClassVar[DeviceState]

class ReprocessStep(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REPROCESS_STEP_UNSPECIFIED: _ClassVar[ReprocessStep]
    REPROCESS_STEP_SCIENCE: _ClassVar[ReprocessStep]
    REPROCESS_STEP_DISCOVERY: _ClassVar[ReprocessStep]

class CandidateLabel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CANDIDATE_LABEL_UNSPECIFIED: _ClassVar[CandidateLabel]
    CANDIDATE_LABEL_REAL: _ClassVar[CandidateLabel]
    CANDIDATE_LABEL_BOGUS: _ClassVar[CandidateLabel]

class EventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_KIND_UNSPECIFIED: _ClassVar[EventKind]
    EVENT_KIND_WORK_ORDER_UPDATE: _ClassVar[EventKind]
    EVENT_KIND_IMAGE_READY: _ClassVar[EventKind]
    EVENT_KIND_CALIBRATION_PROGRESS: _ClassVar[EventKind]
    EVENT_KIND_ALERT_PROCESSED: _ClassVar[EventKind]
    EVENT_KIND_DEVICE_UPDATE: _ClassVar[EventKind]
    EVENT_KIND_TRANSIENT_CANDIDATE: _ClassVar[EventKind]
    EVENT_KIND_HOLD_UPDATE: _ClassVar[EventKind]
    EVENT_KIND_FORCED_PHOTOMETRY: _ClassVar[EventKind]
    EVENT_KIND_CANDIDATE_LABELLED: _ClassVar[EventKind]
IMAGE_TYPE_UNSPECIFIED: ImageType
IMAGE_TYPE_BIAS: ImageType
IMAGE_TYPE_DARK: ImageType
IMAGE_TYPE_FLAT: ImageType
IMAGE_TYPE_LIGHT: ImageType
FLAT_SOURCE_UNSPECIFIED: FlatSource
FLAT_SOURCE_SKY: FlatSource
FLAT_SOURCE_DOME: FlatSource
NIGHT_STEP_UNSPECIFIED: NightStep
NIGHT_STEP_PREPARE: NightStep
NIGHT_STEP_OPEN: NightStep
NIGHT_STEP_CLOSE: NightStep
NIGHT_STEP_RESUME: NightStep
DOME_ACTION_UNSPECIFIED: DomeAction
DOME_ACTION_OPEN: DomeAction
DOME_ACTION_CLOSE: DomeAction
DOME_ACTION_SLEW: DomeAction
DOME_ACTION_PARK: DomeAction
ALERT_FORMAT_UNSPECIFIED: AlertFormat
ALERT_FORMAT_VOEVENT: AlertFormat
ALERT_FORMAT_GWALERT_JSON: AlertFormat
ALERT_FORMAT_GWALERT_AVRO: AlertFormat
WORK_ORDER_STATE_UNSPECIFIED: WorkOrderState
WORK_ORDER_STATE_QUEUED: WorkOrderState
WORK_ORDER_STATE_RUNNING: WorkOrderState
WORK_ORDER_STATE_DONE: WorkOrderState
WORK_ORDER_STATE_FAILED: WorkOrderState
WORK_ORDER_STATE_CANCELLED: WorkOrderState
DEVICE_STATE_UNSPECIFIED: DeviceState
DEVICE_STATE_IDLE: DeviceState
DEVICE_STATE_BUSY: DeviceState
DEVICE_STATE_PARKED: DeviceState
DEVICE_STATE_FAULT: DeviceState
DEVICE_STATE_DISCONNECTED: DeviceState
REPROCESS_STEP_UNSPECIFIED: ReprocessStep
REPROCESS_STEP_SCIENCE: ReprocessStep
REPROCESS_STEP_DISCOVERY: ReprocessStep
CANDIDATE_LABEL_UNSPECIFIED: CandidateLabel
CANDIDATE_LABEL_REAL: CandidateLabel
CANDIDATE_LABEL_BOGUS: CandidateLabel
EVENT_KIND_UNSPECIFIED: EventKind
EVENT_KIND_WORK_ORDER_UPDATE: EventKind
EVENT_KIND_IMAGE_READY: EventKind
EVENT_KIND_CALIBRATION_PROGRESS: EventKind
EVENT_KIND_ALERT_PROCESSED: EventKind
EVENT_KIND_DEVICE_UPDATE: EventKind
EVENT_KIND_TRANSIENT_CANDIDATE: EventKind
EVENT_KIND_HOLD_UPDATE: EventKind
EVENT_KIND_FORCED_PHOTOMETRY: EventKind
EVENT_KIND_CANDIDATE_LABELLED: EventKind

class WorkOrder(_message.Message):
    __slots__ = ("id", "create_time", "requester", "priority", "observe_targets", "take_calibrations", "night_operation", "dome_control", "calibrate_night", "calibrate_images", "process_alert", "find_transients", "label_candidate", "reprocess_night")
    ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    OBSERVE_TARGETS_FIELD_NUMBER: _ClassVar[int]
    TAKE_CALIBRATIONS_FIELD_NUMBER: _ClassVar[int]
    NIGHT_OPERATION_FIELD_NUMBER: _ClassVar[int]
    DOME_CONTROL_FIELD_NUMBER: _ClassVar[int]
    CALIBRATE_NIGHT_FIELD_NUMBER: _ClassVar[int]
    CALIBRATE_IMAGES_FIELD_NUMBER: _ClassVar[int]
    PROCESS_ALERT_FIELD_NUMBER: _ClassVar[int]
    FIND_TRANSIENTS_FIELD_NUMBER: _ClassVar[int]
    LABEL_CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    REPROCESS_NIGHT_FIELD_NUMBER: _ClassVar[int]
    id: str
    create_time: _timestamp_pb2.Timestamp
    requester: str
    priority: int
    observe_targets: ObserveTargets
    take_calibrations: TakeCalibrations
    night_operation: NightOperation
    dome_control: DomeControl
    calibrate_night: CalibrateNight
    calibrate_images: CalibrateImages
    process_alert: ProcessAlert
    find_transients: FindTransients
    label_candidate: LabelCandidate
    reprocess_night: ReprocessNight
    def __init__(self, id: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., requester: _Optional[str] = ..., priority: _Optional[int] = ..., observe_targets: _Optional[_Union[ObserveTargets, _Mapping]] = ..., take_calibrations: _Optional[_Union[TakeCalibrations, _Mapping]] = ..., night_operation: _Optional[_Union[NightOperation, _Mapping]] = ..., dome_control: _Optional[_Union[DomeControl, _Mapping]] = ..., calibrate_night: _Optional[_Union[CalibrateNight, _Mapping]] = ..., calibrate_images: _Optional[_Union[CalibrateImages, _Mapping]] = ..., process_alert: _Optional[_Union[ProcessAlert, _Mapping]] = ..., find_transients: _Optional[_Union[FindTransients, _Mapping]] = ..., label_candidate: _Optional[_Union[LabelCandidate, _Mapping]] = ..., reprocess_night: _Optional[_Union[ReprocessNight, _Mapping]] = ...) -> None: ...

class Target(_message.Message):
    __slots__ = ("name", "ra_deg", "dec_deg", "exposure_time", "exposure_count", "filter", "score", "distance_mpc")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RA_DEG_FIELD_NUMBER: _ClassVar[int]
    DEC_DEG_FIELD_NUMBER: _ClassVar[int]
    EXPOSURE_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPOSURE_COUNT_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_MPC_FIELD_NUMBER: _ClassVar[int]
    name: str
    ra_deg: float
    dec_deg: float
    exposure_time: _duration_pb2.Duration
    exposure_count: int
    filter: str
    score: float
    distance_mpc: float
    def __init__(self, name: _Optional[str] = ..., ra_deg: _Optional[float] = ..., dec_deg: _Optional[float] = ..., exposure_time: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., exposure_count: _Optional[int] = ..., filter: _Optional[str] = ..., score: _Optional[float] = ..., distance_mpc: _Optional[float] = ...) -> None: ...

class ObserveTargets(_message.Message):
    __slots__ = ("targets", "alert_id", "drill", "valid_until", "event_time")
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    ALERT_ID_FIELD_NUMBER: _ClassVar[int]
    DRILL_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    targets: _containers.RepeatedCompositeFieldContainer[Target]
    alert_id: str
    drill: bool
    valid_until: _timestamp_pb2.Timestamp
    event_time: _timestamp_pb2.Timestamp
    def __init__(self, targets: _Optional[_Iterable[_Union[Target, _Mapping]]] = ..., alert_id: _Optional[str] = ..., drill: _Optional[bool] = ..., valid_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class TakeCalibrations(_message.Message):
    __slots__ = ("image_type", "count", "exposure_time", "filter", "flat_source")
    IMAGE_TYPE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    EXPOSURE_TIME_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    FLAT_SOURCE_FIELD_NUMBER: _ClassVar[int]
    image_type: ImageType
    count: int
    exposure_time: _duration_pb2.Duration
    filter: str
    flat_source: FlatSource
    def __init__(self, image_type: _Optional[_Union[ImageType, str]] = ..., count: _Optional[int] = ..., exposure_time: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., filter: _Optional[str] = ..., flat_source: _Optional[_Union[FlatSource, str]] = ...) -> None: ...

class NightOperation(_message.Message):
    __slots__ = ("step", "override", "reason")
    STEP_FIELD_NUMBER: _ClassVar[int]
    OVERRIDE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    step: NightStep
    override: bool
    reason: str
    def __init__(self, step: _Optional[_Union[NightStep, str]] = ..., override: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class DomeControl(_message.Message):
    __slots__ = ("action", "azimuth_deg", "override", "reason")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    AZIMUTH_DEG_FIELD_NUMBER: _ClassVar[int]
    OVERRIDE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    action: DomeAction
    azimuth_deg: float
    override: bool
    reason: str
    def __init__(self, action: _Optional[_Union[DomeAction, str]] = ..., azimuth_deg: _Optional[float] = ..., override: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class CalibrateNight(_message.Message):
    __slots__ = ("directory", "clean_cosmic_rays")
    DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    CLEAN_COSMIC_RAYS_FIELD_NUMBER: _ClassVar[int]
    directory: str
    clean_cosmic_rays: bool
    def __init__(self, directory: _Optional[str] = ..., clean_cosmic_rays: _Optional[bool] = ...) -> None: ...

class CalibrateImages(_message.Message):
    __slots__ = ("paths", "clean_cosmic_rays")
    PATHS_FIELD_NUMBER: _ClassVar[int]
    CLEAN_COSMIC_RAYS_FIELD_NUMBER: _ClassVar[int]
    paths: _containers.RepeatedScalarFieldContainer[str]
    clean_cosmic_rays: bool
    def __init__(self, paths: _Optional[_Iterable[str]] = ..., clean_cosmic_rays: _Optional[bool] = ...) -> None: ...

class ProcessAlert(_message.Message):
    __slots__ = ("payload", "format", "source", "drill")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DRILL_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    format: AlertFormat
    source: str
    drill: bool
    def __init__(self, payload: _Optional[bytes] = ..., format: _Optional[_Union[AlertFormat, str]] = ..., source: _Optional[str] = ..., drill: _Optional[bool] = ...) -> None: ...

class SubmitResponse(_message.Message):
    __slots__ = ("id", "accept_time", "already_known")
    ID_FIELD_NUMBER: _ClassVar[int]
    ACCEPT_TIME_FIELD_NUMBER: _ClassVar[int]
    ALREADY_KNOWN_FIELD_NUMBER: _ClassVar[int]
    id: str
    accept_time: _timestamp_pb2.Timestamp
    already_known: bool
    def __init__(self, id: _Optional[str] = ..., accept_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., already_known: _Optional[bool] = ...) -> None: ...

class GetWorkOrderRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class CancelWorkOrderRequest(_message.Message):
    __slots__ = ("id", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    reason: str
    def __init__(self, id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class Product(_message.Message):
    __slots__ = ("path", "kind", "size_bytes", "sha256", "science")
    PATH_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SCIENCE_FIELD_NUMBER: _ClassVar[int]
    path: str
    kind: str
    size_bytes: int
    sha256: str
    science: FrameScience
    def __init__(self, path: _Optional[str] = ..., kind: _Optional[str] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., science: _Optional[_Union[FrameScience, _Mapping]] = ...) -> None: ...

class FrameScience(_message.Message):
    __slots__ = ("magzp", "magzp_err", "zero_point_stars", "fwhm_px", "limmag", "sky_level", "astrometry_rms_arcsec", "astrometry_stars", "sources", "catalog_path", "psf_beta")
    MAGZP_FIELD_NUMBER: _ClassVar[int]
    MAGZP_ERR_FIELD_NUMBER: _ClassVar[int]
    ZERO_POINT_STARS_FIELD_NUMBER: _ClassVar[int]
    FWHM_PX_FIELD_NUMBER: _ClassVar[int]
    LIMMAG_FIELD_NUMBER: _ClassVar[int]
    SKY_LEVEL_FIELD_NUMBER: _ClassVar[int]
    ASTROMETRY_RMS_ARCSEC_FIELD_NUMBER: _ClassVar[int]
    ASTROMETRY_STARS_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    CATALOG_PATH_FIELD_NUMBER: _ClassVar[int]
    PSF_BETA_FIELD_NUMBER: _ClassVar[int]
    magzp: float
    magzp_err: float
    zero_point_stars: int
    fwhm_px: float
    limmag: float
    sky_level: float
    astrometry_rms_arcsec: float
    astrometry_stars: int
    sources: int
    catalog_path: str
    psf_beta: float
    def __init__(self, magzp: _Optional[float] = ..., magzp_err: _Optional[float] = ..., zero_point_stars: _Optional[int] = ..., fwhm_px: _Optional[float] = ..., limmag: _Optional[float] = ..., sky_level: _Optional[float] = ..., astrometry_rms_arcsec: _Optional[float] = ..., astrometry_stars: _Optional[int] = ..., sources: _Optional[int] = ..., catalog_path: _Optional[str] = ..., psf_beta: _Optional[float] = ...) -> None: ...

class WorkOrderStatus(_message.Message):
    __slots__ = ("id", "state", "message", "progress_percent", "products", "task", "requester", "priority", "accept_time", "start_time", "end_time", "attempts")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_PERCENT_FIELD_NUMBER: _ClassVar[int]
    PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    ACCEPT_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    id: str
    state: WorkOrderState
    message: str
    progress_percent: float
    products: _containers.RepeatedCompositeFieldContainer[Product]
    task: str
    requester: str
    priority: int
    accept_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    attempts: int
    def __init__(self, id: _Optional[str] = ..., state: _Optional[_Union[WorkOrderState, str]] = ..., message: _Optional[str] = ..., progress_percent: _Optional[float] = ..., products: _Optional[_Iterable[_Union[Product, _Mapping]]] = ..., task: _Optional[str] = ..., requester: _Optional[str] = ..., priority: _Optional[int] = ..., accept_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., attempts: _Optional[int] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Device(_message.Message):
    __slots__ = ("name", "state", "driver", "message")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DRIVER_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: DeviceState
    driver: str
    message: str
    def __init__(self, name: _Optional[str] = ..., state: _Optional[_Union[DeviceState, str]] = ..., driver: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ModuleStatus(_message.Message):
    __slots__ = ("module", "version", "queue_depth", "running", "devices", "last_sequence", "start_time", "clock_time", "message", "activity", "hold")
    MODULE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    CLOCK_TIME_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ACTIVITY_FIELD_NUMBER: _ClassVar[int]
    HOLD_FIELD_NUMBER: _ClassVar[int]
    module: str
    version: str
    queue_depth: int
    running: int
    devices: _containers.RepeatedCompositeFieldContainer[Device]
    last_sequence: int
    start_time: _timestamp_pb2.Timestamp
    clock_time: _timestamp_pb2.Timestamp
    message: str
    activity: str
    hold: OperatorHold
    def __init__(self, module: _Optional[str] = ..., version: _Optional[str] = ..., queue_depth: _Optional[int] = ..., running: _Optional[int] = ..., devices: _Optional[_Iterable[_Union[Device, _Mapping]]] = ..., last_sequence: _Optional[int] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., clock_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., message: _Optional[str] = ..., activity: _Optional[str] = ..., hold: _Optional[_Union[OperatorHold, _Mapping]] = ...) -> None: ...

class OperatorHold(_message.Message):
    __slots__ = ("by", "since", "reason", "work_order_id", "waiting_alert_targets")
    BY_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    WORK_ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    WAITING_ALERT_TARGETS_FIELD_NUMBER: _ClassVar[int]
    by: str
    since: _timestamp_pb2.Timestamp
    reason: str
    work_order_id: str
    waiting_alert_targets: int
    def __init__(self, by: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ..., work_order_id: _Optional[str] = ..., waiting_alert_targets: _Optional[int] = ...) -> None: ...

class FindTransients(_message.Message):
    __slots__ = ("paths", "night", "alert_id", "event_time")
    PATHS_FIELD_NUMBER: _ClassVar[int]
    NIGHT_FIELD_NUMBER: _ClassVar[int]
    ALERT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    paths: _containers.RepeatedScalarFieldContainer[str]
    night: str
    alert_id: str
    event_time: _timestamp_pb2.Timestamp
    def __init__(self, paths: _Optional[_Iterable[str]] = ..., night: _Optional[str] = ..., alert_id: _Optional[str] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ReprocessNight(_message.Message):
    __slots__ = ("night", "from_step")
    NIGHT_FIELD_NUMBER: _ClassVar[int]
    FROM_STEP_FIELD_NUMBER: _ClassVar[int]
    night: str
    from_step: ReprocessStep
    def __init__(self, night: _Optional[str] = ..., from_step: _Optional[_Union[ReprocessStep, str]] = ...) -> None: ...

class LabelCandidate(_message.Message):
    __slots__ = ("name", "label", "note", "tns_name")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    TNS_NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    label: CandidateLabel
    note: str
    tns_name: str
    def __init__(self, name: _Optional[str] = ..., label: _Optional[_Union[CandidateLabel, str]] = ..., note: _Optional[str] = ..., tns_name: _Optional[str] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("after_sequence", "work_order_id", "kinds", "replay_only")
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    WORK_ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    REPLAY_ONLY_FIELD_NUMBER: _ClassVar[int]
    after_sequence: int
    work_order_id: str
    kinds: _containers.RepeatedScalarFieldContainer[EventKind]
    replay_only: bool
    def __init__(self, after_sequence: _Optional[int] = ..., work_order_id: _Optional[str] = ..., kinds: _Optional[_Iterable[_Union[EventKind, str]]] = ..., replay_only: _Optional[bool] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("sequence", "time", "work_order_id", "work_order_update", "image_ready", "calibration_progress", "alert_processed", "device_update", "transient_candidate", "hold_update", "forced_photometry", "candidate_labelled")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    WORK_ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    WORK_ORDER_UPDATE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_READY_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    ALERT_PROCESSED_FIELD_NUMBER: _ClassVar[int]
    DEVICE_UPDATE_FIELD_NUMBER: _ClassVar[int]
    TRANSIENT_CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    HOLD_UPDATE_FIELD_NUMBER: _ClassVar[int]
    FORCED_PHOTOMETRY_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_LABELLED_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    time: _timestamp_pb2.Timestamp
    work_order_id: str
    work_order_update: WorkOrderUpdate
    image_ready: ImageReady
    calibration_progress: CalibrationProgress
    alert_processed: AlertProcessed
    device_update: DeviceUpdate
    transient_candidate: TransientCandidate
    hold_update: HoldUpdate
    forced_photometry: ForcedPhotometry
    candidate_labelled: CandidateLabelled
    def __init__(self, sequence: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., work_order_id: _Optional[str] = ..., work_order_update: _Optional[_Union[WorkOrderUpdate, _Mapping]] = ..., image_ready: _Optional[_Union[ImageReady, _Mapping]] = ..., calibration_progress: _Optional[_Union[CalibrationProgress, _Mapping]] = ..., alert_processed: _Optional[_Union[AlertProcessed, _Mapping]] = ..., device_update: _Optional[_Union[DeviceUpdate, _Mapping]] = ..., transient_candidate: _Optional[_Union[TransientCandidate, _Mapping]] = ..., hold_update: _Optional[_Union[HoldUpdate, _Mapping]] = ..., forced_photometry: _Optional[_Union[ForcedPhotometry, _Mapping]] = ..., candidate_labelled: _Optional[_Union[CandidateLabelled, _Mapping]] = ...) -> None: ...

class WorkOrderUpdate(_message.Message):
    __slots__ = ("state", "message", "progress_percent", "task")
    STATE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_PERCENT_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    state: WorkOrderState
    message: str
    progress_percent: float
    task: str
    def __init__(self, state: _Optional[_Union[WorkOrderState, str]] = ..., message: _Optional[str] = ..., progress_percent: _Optional[float] = ..., task: _Optional[str] = ...) -> None: ...

class ImageReady(_message.Message):
    __slots__ = ("path", "sha256", "size_bytes", "image_type", "filter", "exposure_time", "object", "night", "date_obs")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    IMAGE_TYPE_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    EXPOSURE_TIME_FIELD_NUMBER: _ClassVar[int]
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    NIGHT_FIELD_NUMBER: _ClassVar[int]
    DATE_OBS_FIELD_NUMBER: _ClassVar[int]
    path: str
    sha256: str
    size_bytes: int
    image_type: ImageType
    filter: str
    exposure_time: _duration_pb2.Duration
    object: str
    night: str
    date_obs: _timestamp_pb2.Timestamp
    def __init__(self, path: _Optional[str] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., image_type: _Optional[_Union[ImageType, str]] = ..., filter: _Optional[str] = ..., exposure_time: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., object: _Optional[str] = ..., night: _Optional[str] = ..., date_obs: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CalibrationProgress(_message.Message):
    __slots__ = ("stage", "frames_done", "frames_total", "percent", "path", "science")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    FRAMES_DONE_FIELD_NUMBER: _ClassVar[int]
    FRAMES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    PERCENT_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    SCIENCE_FIELD_NUMBER: _ClassVar[int]
    stage: str
    frames_done: int
    frames_total: int
    percent: float
    path: str
    science: FrameScience
    def __init__(self, stage: _Optional[str] = ..., frames_done: _Optional[int] = ..., frames_total: _Optional[int] = ..., percent: _Optional[float] = ..., path: _Optional[str] = ..., science: _Optional[_Union[FrameScience, _Mapping]] = ...) -> None: ...

class AlertProcessed(_message.Message):
    __slots__ = ("alert_id", "alert_type", "serial", "drill", "targets_relayed", "message")
    ALERT_ID_FIELD_NUMBER: _ClassVar[int]
    ALERT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    DRILL_FIELD_NUMBER: _ClassVar[int]
    TARGETS_RELAYED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    alert_id: str
    alert_type: str
    serial: int
    drill: bool
    targets_relayed: int
    message: str
    def __init__(self, alert_id: _Optional[str] = ..., alert_type: _Optional[str] = ..., serial: _Optional[int] = ..., drill: _Optional[bool] = ..., targets_relayed: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class TransientCandidate(_message.Message):
    __slots__ = ("name", "ra_deg", "dec_deg", "mag", "mag_err", "filter", "snr", "score", "flags", "frame_path", "x", "y", "date_obs", "host", "host_offset_arcsec", "host_offset_kpc", "alert_id", "detections", "triplet_path", "record_path", "first_seen")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RA_DEG_FIELD_NUMBER: _ClassVar[int]
    DEC_DEG_FIELD_NUMBER: _ClassVar[int]
    MAG_FIELD_NUMBER: _ClassVar[int]
    MAG_ERR_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    SNR_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    FRAME_PATH_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    DATE_OBS_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    HOST_OFFSET_ARCSEC_FIELD_NUMBER: _ClassVar[int]
    HOST_OFFSET_KPC_FIELD_NUMBER: _ClassVar[int]
    ALERT_ID_FIELD_NUMBER: _ClassVar[int]
    DETECTIONS_FIELD_NUMBER: _ClassVar[int]
    TRIPLET_PATH_FIELD_NUMBER: _ClassVar[int]
    RECORD_PATH_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEEN_FIELD_NUMBER: _ClassVar[int]
    name: str
    ra_deg: float
    dec_deg: float
    mag: float
    mag_err: float
    filter: str
    snr: float
    score: float
    flags: _containers.RepeatedScalarFieldContainer[str]
    frame_path: str
    x: float
    y: float
    date_obs: _timestamp_pb2.Timestamp
    host: str
    host_offset_arcsec: float
    host_offset_kpc: float
    alert_id: str
    detections: int
    triplet_path: str
    record_path: str
    first_seen: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., ra_deg: _Optional[float] = ..., dec_deg: _Optional[float] = ..., mag: _Optional[float] = ..., mag_err: _Optional[float] = ..., filter: _Optional[str] = ..., snr: _Optional[float] = ..., score: _Optional[float] = ..., flags: _Optional[_Iterable[str]] = ..., frame_path: _Optional[str] = ..., x: _Optional[float] = ..., y: _Optional[float] = ..., date_obs: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., host: _Optional[str] = ..., host_offset_arcsec: _Optional[float] = ..., host_offset_kpc: _Optional[float] = ..., alert_id: _Optional[str] = ..., detections: _Optional[int] = ..., triplet_path: _Optional[str] = ..., record_path: _Optional[str] = ..., first_seen: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class DeviceUpdate(_message.Message):
    __slots__ = ("device",)
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    device: Device
    def __init__(self, device: _Optional[_Union[Device, _Mapping]] = ...) -> None: ...

class ForcedPhotometry(_message.Message):
    __slots__ = ("name", "alert_id", "filter", "date_obs", "frame_path", "flux", "flux_err", "mag", "mag_err", "limmag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALERT_ID_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    DATE_OBS_FIELD_NUMBER: _ClassVar[int]
    FRAME_PATH_FIELD_NUMBER: _ClassVar[int]
    FLUX_FIELD_NUMBER: _ClassVar[int]
    FLUX_ERR_FIELD_NUMBER: _ClassVar[int]
    MAG_FIELD_NUMBER: _ClassVar[int]
    MAG_ERR_FIELD_NUMBER: _ClassVar[int]
    LIMMAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    alert_id: str
    filter: str
    date_obs: _timestamp_pb2.Timestamp
    frame_path: str
    flux: float
    flux_err: float
    mag: float
    mag_err: float
    limmag: float
    def __init__(self, name: _Optional[str] = ..., alert_id: _Optional[str] = ..., filter: _Optional[str] = ..., date_obs: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., frame_path: _Optional[str] = ..., flux: _Optional[float] = ..., flux_err: _Optional[float] = ..., mag: _Optional[float] = ..., mag_err: _Optional[float] = ..., limmag: _Optional[float] = ...) -> None: ...

class CandidateLabelled(_message.Message):
    __slots__ = ("name", "alert_id", "label", "by", "note")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALERT_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    BY_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    name: str
    alert_id: str
    label: CandidateLabel
    by: str
    note: str
    def __init__(self, name: _Optional[str] = ..., alert_id: _Optional[str] = ..., label: _Optional[_Union[CandidateLabel, str]] = ..., by: _Optional[str] = ..., note: _Optional[str] = ...) -> None: ...

class HoldUpdate(_message.Message):
    __slots__ = ("hold", "message", "ended_by")
    HOLD_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ENDED_BY_FIELD_NUMBER: _ClassVar[int]
    hold: OperatorHold
    message: str
    ended_by: str
    def __init__(self, hold: _Optional[_Union[OperatorHold, _Mapping]] = ..., message: _Optional[str] = ..., ended_by: _Optional[str] = ...) -> None: ...

class FetchFileRequest(_message.Message):
    __slots__ = ("path", "chunk_size")
    PATH_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    path: str
    chunk_size: int
    def __init__(self, path: _Optional[str] = ..., chunk_size: _Optional[int] = ...) -> None: ...

class FileChunk(_message.Message):
    __slots__ = ("data", "offset", "size_bytes", "sha256", "last")
    DATA_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    offset: int
    size_bytes: int
    sha256: str
    last: bool
    def __init__(self, data: _Optional[bytes] = ..., offset: _Optional[int] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., last: _Optional[bool] = ...) -> None: ...
