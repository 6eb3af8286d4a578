"""Scoring ZTF and Rubin avro alert topics from Kafka (``confluent-kafka``), as BOOM/Babamul do.

Message values are decoded as either of the two wire formats the surveys use:

* an avro object-container file (magic ``Obj\\x01``) holding one or more alerts with their writer
  schema, as ZTF publishes its alerts (schema ``ztf.alert``);
* the Confluent wire format (a zero byte, a 4-byte big-endian schema id, then one schemaless avro
  record), as Rubin publishes its alerts. The schema comes from ``schemas`` (id -> parsed avro
  schema), else from ``lsst-alert-packet``, whose ids are ``100 * major + minor`` of ``lsst.vX_Y.alert``.

The writer schema's name picks the reader (``ztf*``: :mod:`~hybrid.data.readers.ztf`, ``lsst*``:
:mod:`~hybrid.data.readers.rubin`), and each batch of messages is scored with
:func:`hybrid.serving.stream.score_chunk`: the decoding, preprocessing and ONNX graph of
``hybrid predict``. A message that cannot be decoded gives one rejected row whose ``alert_id`` is
``topic/partition/offset`` and whose ``rejected`` says why; the consumer goes on.

:func:`consume_and_score` reads topics in batches (``Consumer.consume``: up to ``batch_size``
messages, or what came within ``max_wait`` seconds), and writes one JSON message per alert to the
output topic, keyed by ``alert_id``: ids, ``score``, ``p_<type>``, further outputs, ``model_version``
and ``rejected``. With ``exactly_once`` (the default) the scores and the consumer offsets are
committed in one Kafka transaction, so a consumer killed at any point and started again (same
``group``) scores each alert once for readers with ``isolation.level=read_committed``; without it,
offsets are committed after the scores are flushed (at least once).

Needs the ``[kafka]`` extra (confluent-kafka).
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from hybrid.data.readers import ReaderError
from hybrid.data.readers.rubin import RubinChunk
from hybrid.data.readers.ztf import chunk_from_records
from hybrid.serving.predictor import Predictor
from hybrid.serving.stream import cached_predictor, resolved, score_chunk

log = logging.getLogger(__name__)

#: schema-name prefix -> the chunk of its reader, from (records, source)
CHUNKERS: dict[str, Callable[[list[dict], str], Any]] = {
    "ztf": chunk_from_records,
    "lsst": lambda records, source: RubinChunk(source, records),
}


@dataclass(frozen=True)
class Message:
    """What the scorer needs of a Kafka message (``confluent_kafka.Message`` has the same methods'
    values); ``value`` is the raw avro bytes."""

    topic: str
    partition: int
    offset: int
    value: bytes

    @classmethod
    def of(cls, message: Any) -> Message:
        return cls(message.topic(), message.partition(), message.offset(), message.value() or b"")

    @property
    def where(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


@lru_cache(maxsize=1)
def rubin_schemas() -> dict[int, dict]:
    """Schema id -> parsed schema of every ``lsst.vX_Y.alert`` shipped with ``lsst-alert-packet``."""
    try:
        from lsst.alert.packet import SchemaRegistry
    except ImportError:
        return {}
    registry = SchemaRegistry.all_schemas_from_filesystem()
    return {i: registry.get_by_id(i).definition for i in registry.known_ids}


def decode_value(value: bytes, schemas: Mapping[int, dict] | None = None) -> tuple[str, list[dict]]:
    """(writer schema name, alert records) of one message value (see the module doc).

    Raises:
        ReaderError: neither wire format, an unknown schema id, or corrupt avro.
    """
    import fastavro

    framed = len(value) > 5 and value[0] == 0
    if framed:
        schema_id = int.from_bytes(value[1:5], "big")
        schema = (schemas or {}).get(schema_id) or rubin_schemas().get(schema_id)
        if schema is None:
            raise ReaderError(f"Confluent wire format with unknown schema id {schema_id}")
        parsed = fastavro.parse_schema(schema)
    try:
        if value[:4] == b"Obj\x01":
            reader = fastavro.reader(io.BytesIO(value))
            return str(reader.writer_schema.get("name", "")), list(reader)
        if framed:
            return str(parsed.get("name", "")), [fastavro.schemaless_reader(io.BytesIO(value[5:]), parsed)]
    except (ValueError, EOFError, StopIteration, IndexError) as err:
        raise ReaderError(f"corrupt avro ({type(err).__name__}: {err})") from err
    raise ReaderError(f"not avro: neither an object container nor the Confluent wire format ({value[:8]!r})")


def score_messages(
    predictor: Predictor, messages: Iterable[Message], schemas: Mapping[int, dict] | None = None
) -> pd.DataFrame:
    """One row per alert of ``messages`` (several for a message holding several alerts; one rejected
    row for a message that cannot be decoded): ids, scores, ``model_version``, ``rejected``.

    Alerts are scored in one chunk per topic and survey, in message order within each.
    """
    groups: dict[tuple[str, str], list[dict]] = {}
    failed: list[dict] = []
    for message in messages:
        try:
            name, records = decode_value(message.value, schemas)
            prefix = next((p for p in CHUNKERS if name.startswith(p)), None)
            if prefix is None:
                raise ReaderError(f"schema {name!r} is neither a ZTF nor a Rubin alert")
        except ReaderError as err:
            failed.append(
                {"alert_id": message.where, "source": f"kafka:{message.topic}", "rejected": str(err)}
            )
            continue
        groups.setdefault((message.topic, prefix), []).extend(records)
    frames = [
        score_chunk(predictor, CHUNKERS[prefix](records, f"kafka:{topic}"))
        for (topic, prefix), records in groups.items()
    ]
    if failed:
        frames.append(pd.DataFrame(failed).assign(model_version=predictor.bundle.version))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def score_records(rows: pd.DataFrame) -> list[tuple[str, bytes]]:
    """(key, JSON value) per row, nulls for missing values."""
    records = json.loads(rows.to_json(orient="records", double_precision=15))
    return [(str(r.get("alert_id")), json.dumps(r).encode()) for r in records]


def consume_and_score(
    bundle: str | Path,
    topics: list[str],
    out_topic: str,
    *,
    bootstrap_servers: str,
    group: str = "hybrid",
    batch_size: int = 256,
    max_wait: float = 1.0,
    exactly_once: bool = True,
    idle_stop: float | None = None,
    config: Mapping[str, Any] | None = None,
    schemas: Mapping[int, dict] | None = None,
) -> int:
    """Score the alerts of ``topics`` into ``out_topic`` until interrupted (see the module doc).

    Args:
        bundle: export bundle directory.
        topics: alert topics (ZTF or Rubin avro).
        out_topic: topic the scores are written to (JSON, keyed by ``alert_id``).
        bootstrap_servers: the Kafka brokers.
        group: consumer group (its committed offsets are where a restarted consumer resumes).
        batch_size, max_wait: at most this many messages per batch, waiting at most ``max_wait`` s.
        exactly_once: commit scores and offsets in one transaction (else: at least once).
        idle_stop: stop after this many seconds with partitions assigned and no message (None: run
            until Ctrl-C).
        config: further librdkafka settings for consumer and producer (security, ...).
        schemas: schema id -> avro schema for Confluent-framed values (Rubin's come with
            lsst-alert-packet).

    Returns:
        The number of alert rows written.
    """
    import time

    from confluent_kafka import Consumer, KafkaException, Producer

    predictor = cached_predictor(resolved(bundle))
    common = {"bootstrap.servers": bootstrap_servers, **(config or {})}
    consumer = Consumer(
        {
            **common,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    producer_conf = {**common, "enable.idempotence": True}
    if exactly_once:
        producer_conf["transactional.id"] = f"hybrid-{group}-{out_topic}"
    producer = Producer(producer_conf)
    if exactly_once:
        producer.init_transactions(30)
    consumer.subscribe(list(topics))
    written, last = 0, time.monotonic()
    try:
        while idle_stop is None or time.monotonic() - last < idle_stop:
            raw = consumer.consume(num_messages=batch_size, timeout=max_wait)
            errors = [m.error() for m in raw if m.error() is not None]
            for err in errors:
                if err.fatal():
                    raise KafkaException(err)
                log.warning("kafka: %s", err)
            messages = [Message.of(m) for m in raw if m.error() is None]
            if not messages:
                if not consumer.assignment():  # idle time counts from joining the group
                    last = time.monotonic()
                continue
            last = time.monotonic()
            rows = score_messages(predictor, messages, schemas)
            if exactly_once:
                producer.begin_transaction()
                try:
                    for key, value in score_records(rows):
                        producer.produce(out_topic, key=key.encode(), value=value)
                    offsets = consumer.position(consumer.assignment())
                    producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), 30)
                    producer.commit_transaction(30)
                except BaseException:
                    producer.abort_transaction(30)  # neither these scores nor the offsets are kept
                    raise
            else:
                for key, value in score_records(rows):
                    producer.produce(out_topic, key=key.encode(), value=value)
                producer.flush(30)
                consumer.commit(asynchronous=False)
            written += len(rows)
            log.info("%d alerts scored into %s (%d in all)", len(rows), out_topic, written)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
        producer.flush(30)
    return written
