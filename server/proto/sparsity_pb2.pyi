from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelSparsityRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class BucketTiming(_message.Message):
    __slots__ = ("batch", "rows", "dense_us", "sparse_us", "speedup", "kernel")
    BATCH_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    DENSE_US_FIELD_NUMBER: _ClassVar[int]
    SPARSE_US_FIELD_NUMBER: _ClassVar[int]
    SPEEDUP_FIELD_NUMBER: _ClassVar[int]
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    batch: int
    rows: int
    dense_us: float
    sparse_us: float
    speedup: float
    kernel: str
    def __init__(self, batch: _Optional[int] = ..., rows: _Optional[int] = ..., dense_us: _Optional[float] = ..., sparse_us: _Optional[float] = ..., speedup: _Optional[float] = ..., kernel: _Optional[str] = ...) -> None: ...

class LayerDecision(_message.Message):
    __slots__ = ("layer", "out_features", "in_features", "kernel", "reason", "buckets")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    OUT_FEATURES_FIELD_NUMBER: _ClassVar[int]
    IN_FEATURES_FIELD_NUMBER: _ClassVar[int]
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    layer: str
    out_features: int
    in_features: int
    kernel: str
    reason: str
    buckets: _containers.RepeatedCompositeFieldContainer[BucketTiming]
    def __init__(self, layer: _Optional[str] = ..., out_features: _Optional[int] = ..., in_features: _Optional[int] = ..., kernel: _Optional[str] = ..., reason: _Optional[str] = ..., buckets: _Optional[_Iterable[_Union[BucketTiming, _Mapping]]] = ...) -> None: ...

class VersionSparsity(_message.Message):
    __slots__ = ("version", "device", "dtype", "sparse_layers", "dense_layers", "bytes_by_kind", "dense_equivalent_bytes", "layers", "details")
    class BytesByKindEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SPARSE_LAYERS_FIELD_NUMBER: _ClassVar[int]
    DENSE_LAYERS_FIELD_NUMBER: _ClassVar[int]
    BYTES_BY_KIND_FIELD_NUMBER: _ClassVar[int]
    DENSE_EQUIVALENT_BYTES_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    version: str
    device: str
    dtype: str
    sparse_layers: _containers.RepeatedScalarFieldContainer[str]
    dense_layers: _containers.RepeatedScalarFieldContainer[str]
    bytes_by_kind: _containers.ScalarMap[str, int]
    dense_equivalent_bytes: int
    layers: _containers.RepeatedCompositeFieldContainer[LayerDecision]
    details: _struct_pb2.Struct
    def __init__(self, version: _Optional[str] = ..., device: _Optional[str] = ..., dtype: _Optional[str] = ..., sparse_layers: _Optional[_Iterable[str]] = ..., dense_layers: _Optional[_Iterable[str]] = ..., bytes_by_kind: _Optional[_Mapping[str, int]] = ..., dense_equivalent_bytes: _Optional[int] = ..., layers: _Optional[_Iterable[_Union[LayerDecision, _Mapping]]] = ..., details: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ModelSparsityResponse(_message.Message):
    __slots__ = ("name", "versions")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    versions: _containers.RepeatedCompositeFieldContainer[VersionSparsity]
    def __init__(self, name: _Optional[str] = ..., versions: _Optional[_Iterable[_Union[VersionSparsity, _Mapping]]] = ...) -> None: ...
