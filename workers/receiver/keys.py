"""The receiver app's state, as typed keys: one place, so its route modules share it."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web
from aiokafka import AIOKafkaProducer

from workers.auth import Principals
from workers.buyer.keys import Sealer
from workers.labels.store import LabelStore
from workers.receiver.dedupe import Dedupe
from workers.receiver.metrics import ReceiverMetrics
from workers.settings import ReceiverSettings

SETTINGS = web.AppKey("settings", ReceiverSettings)
PRODUCER = web.AppKey("producer", AIOKafkaProducer)
METRICS = web.AppKey("metrics", ReceiverMetrics)
DEDUPE = web.AppKey("dedupe", Dedupe)
APPS = web.AppKey("tiktok_apps", Mapping[str, str])  # app_key -> app_secret
PRINCIPALS = web.AppKey("principals", Principals)
STORE = web.AppKey("label_store", LabelStore)
SEALER = web.AppKey("sealer", Sealer)  # seals posted orders' recipients
