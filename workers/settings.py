"""The settings of a parcelflow process, in sections per concern.

``Settings`` holds every section; each worker takes its own (``ReceiverSettings``,
``LabelerSettings``...), which holds the sections it shares (``KafkaSettings``,
``WorkerSettings``, ``AuthSettings``, ``TikTokSettings``, ``LabelStoreSettings``).

Every value comes from an environment variable with the ``PARCELFLOW_`` prefix and the
field's name (or its default). It is built once in ``main()`` and passed down; nothing
else reads the environment. Secrets are ``SecretStr``: they print as ``**********``.

No secret has a default that works: a receiver without a TikTok app secret refuses to
start, and the devstack generates random secrets for each run.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.common import Address

LabelFormat = Literal["pdf", "png", "zpl"]
Role = Literal["orders", "boxes", "labels", "operator"]
ALL_WAREHOUSES = "*"
WAREHOUSE_ROLES = frozenset({"boxes", "labels"})  # roles that reach only named warehouses


class PrincipalSpec(BaseModel):
    """One caller of the HTTP API: its token (or the token's SHA-256, hex), its roles and
    the warehouses it may act in ("*": every warehouse)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    token: SecretStr | None = None
    token_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    roles: list[Role] = Field(min_length=1)
    warehouses: list[str] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _one_credential_and_warehouses(self) -> PrincipalSpec:
        if (self.token is None) == (self.token_sha256 is None):
            raise ValueError("give exactly one of token and token_sha256")
        if self.token is not None and len(self.token.get_secret_value()) < 16:
            raise ValueError("a token has at least 16 characters")
        if self.warehouses is None and WAREHOUSE_ROLES & set(self.roles):
            raise ValueError(
                'the boxes and labels roles need "warehouses" (a list of warehouse ids, '
                'or ["*"] for every warehouse)'
            )
        return self


class Warehouse(BaseModel):
    ship_from: Address
    fulfillment_context: dict[str, Any] = Field(default_factory=lambda: {"channel": "TikTok Shop"})
    # TikTok Shipping: how its packages reach the carrier, told with Ship Package once the
    # label is made; "" (the US default): the carrier's first scan ships the package.
    tiktok_handover: Literal["", "PICKUP", "DROP_OFF"] = ""


PRINCIPAL_NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")

# What a worker derives from one input (a plan, a job, a dead letter's envelope) needs room
# beside it in a record of kafka_max_message_bytes.
INPUT_HEADROOM_BYTES = 64 * 1024


class Section(BaseSettings):
    """How every section reads its values: ``PARCELFLOW_`` + the field's name."""

    model_config = SettingsConfigDict(env_prefix="PARCELFLOW_", frozen=True, extra="ignore")


class KafkaSettings(Section):
    """Kafka: the cluster, the client settings every worker shares, the topics."""

    kafka_bootstrap: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers (host:port, comma separated)."
    )

    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT",
        description="security.protocol of every Kafka client: SSL for TLS, SASL_SSL for "
        "TLS with SASL (Amazon MSK, Confluent Cloud, Aiven).",
    )

    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] = Field(
        "SCRAM-SHA-512",
        description="sasl.mechanism with SASL_PLAINTEXT or SASL_SSL. OAUTHBEARER reads "
        "its token from kafka_sasl_oauth_token_file.",
    )

    kafka_sasl_username: str = Field("", description="SASL username (PLAIN, SCRAM).")

    kafka_sasl_password: SecretStr = Field(
        SecretStr(""), description="SASL password (PLAIN, SCRAM): a secret, never logged."
    )

    kafka_sasl_oauth_token_file: Path | None = Field(
        None,
        description="OAUTHBEARER: a file holding the current token, read again at every "
        "authentication (a projected service-account token, or one a sidecar refreshes).",
    )

    kafka_ssl_cafile: Path | None = Field(
        None, description="CA certificates (PEM) to trust for the brokers; none: the system's."
    )

    kafka_ssl_certfile: Path | None = Field(
        None, description="Client certificate (PEM) for mutual TLS."
    )

    kafka_ssl_keyfile: Path | None = Field(None, description="Client private key (PEM) for mTLS.")

    kafka_ssl_key_password: SecretStr = Field(
        SecretStr(""), description="Password of the client private key, if it has one."
    )

    kafka_ssl_check_hostname: bool = Field(
        True, description="Check that the brokers' certificates name the host connected to."
    )

    kafka_allow_insecure: bool = Field(
        False,
        description="Accept kafka_ssl_check_hostname=false and a SASL PLAIN password over "
        "plaintext (a warning is logged). Refused otherwise.",
    )

    kafka_embedded: bool = Field(
        False,
        description="The broker is the embedded Tansu: turns on its ListOffsets(LATEST) "
        "correction. Set by the devstack; leave false for Apache Kafka.",
    )

    topic_namespace: str = Field(
        "",
        description="Prefix for every topic and consumer group name (several stacks, or "
        "tests, on one cluster).",
    )

    topic_partitions: int = Field(
        4, ge=1, description="Partitions for every topic parcelflow creates (co-partitioned)."
    )

    topic_replication: int = Field(1, ge=1, description="Replication factor for new topics.")

    topic_min_insync_replicas: int = Field(
        1,
        ge=1,
        description="min.insync.replicas of the topics parcelflow creates (2 with "
        "replication 3 in production: an acked write survives a broker's loss).",
    )

    topics_auto_create: bool = Field(
        True,
        description="Workers create missing topics at start (the devstack). Set false "
        "where a platform team provisions topics: workers then only check them, and refuse "
        "to start on a mismatch.",
    )

    kafka_session_timeout_s: float = Field(
        6.0,
        ge=1,
        description="Consumer group session timeout. The embedded broker holds a group "
        "join for half of it, so keep it short there.",
    )

    kafka_max_message_bytes: int = Field(
        1024 * 1024,
        ge=256 * 1024,
        description="Largest record parcelflow writes: every producer's max.request.size. "
        "The cluster's message.max.bytes (or the topics' max.message.bytes) must be at least "
        "this. A record read that is larger than this less 64 KiB (room for what is derived "
        "from it) is dead-lettered, and a dead letter always fits.",
    )

    kafka_fetch_max_wait_ms: int = Field(
        500,
        ge=1,
        le=30_000,
        description="How long a fetch may wait for data (Kafka's fetch.max.wait.ms). A real "
        "broker answers as soon as data is there; the embedded broker holds every fetch "
        "until this is over; the devstack sets 100 (the planner too: Faust's own is 1500): "
        "see the embedded broker in docs/architecture.md.",
    )

    kafka_linger_ms: int = Field(
        1,
        ge=0,
        le=1000,
        description="How long a worker's producer gathers writes into one batch. Each "
        "write is awaited, so this adds to every hop's latency; a real broker wants it low. "
        "The embedded broker's fetch cost grows with the batches it holds, so the devstack "
        "sets more (see the embedded broker in docs/architecture.md).",
    )

    kafka_request_timeout_s: float = Field(
        30.0,
        gt=0,
        description="How long a producer waits for the broker to ack a write before the "
        "write fails (and is retried, or the worker exits non-zero).",
    )

    kafka_max_poll_interval_s: float = Field(
        300.0,
        ge=1,
        description="Longest pause between a consumer's polls before the group drops it. "
        "The labeler polls while its calls run, so slow calls never come near it.",
    )

    planner_app_id: str = Field("parcelflow-planner", description="Faust app id (group id).")

    @property
    def max_input_bytes(self) -> int:
        """Largest record value a worker reads; larger ones are dead-lettered."""
        return self.kafka_max_message_bytes - INPUT_HEADROOM_BYTES

    @model_validator(mode="after")
    def _kafka_security_complete(self) -> KafkaSettings:
        if self.kafka_security_protocol.startswith("SASL"):
            if self.kafka_sasl_mechanism == "OAUTHBEARER":
                if self.kafka_sasl_oauth_token_file is None:
                    raise ValueError("OAUTHBEARER needs kafka_sasl_oauth_token_file")
            elif not (self.kafka_sasl_username and self.kafka_sasl_password.get_secret_value()):
                raise ValueError(
                    f"{self.kafka_sasl_mechanism} needs kafka_sasl_username and kafka_sasl_password"
                )
        if not self.kafka_allow_insecure:
            if not self.kafka_ssl_check_hostname:
                raise ValueError(
                    "kafka_ssl_check_hostname=false lets anyone with a certificate of the CA "
                    "pose as the brokers: set kafka_allow_insecure=true to accept it"
                )
            if (
                self.kafka_security_protocol == "SASL_PLAINTEXT"
                and self.kafka_sasl_mechanism == "PLAIN"
            ):
                raise ValueError(
                    "SASL PLAIN over SASL_PLAINTEXT sends the password in clear: use "
                    "SASL_SSL, or set kafka_allow_insecure=true to accept it"
                )
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ValueError("mutual TLS needs both kafka_ssl_certfile and kafka_ssl_keyfile")
        return self


class WorkerSettings(KafkaSettings):
    """What every long-lived worker has beside Kafka: logs, the ops server, stopping."""

    log_level: str = Field("info", description="debug, info, warning or error.")

    ops_host: str = Field(
        "127.0.0.1",
        description="Address of the ops HTTP server of the enricher, planner, labeler and "
        "auditor (0.0.0.0 in a container, for the probes and Prometheus).",
    )

    ops_port: int = Field(
        0,
        ge=0,
        description="Port of that ops server: /healthz, /readyz and /metrics (the receiver "
        "serves the same routes on its own port); 0 turns it off.",
    )

    worker_stop_timeout_s: float = Field(
        8.0,
        gt=0,
        description="A worker asked to stop (SIGTERM, Ctrl-C) exits within this long, "
        "whatever it waits for (a broker that is gone); exit code 1 past it.",
    )


class AuthSettings(Section):
    """Callers of the HTTP API (the receiver and the dashboard)."""

    principals: dict[str, PrincipalSpec] = Field(
        default_factory=dict,
        description="Callers of the HTTP API, as JSON name → {token or token_sha256, roles, "
        'warehouses}, e.g. {"station-a1": {"token_sha256": "<64 hex>", "roles": ["boxes", '
        '"labels"], "warehouses": ["WH-A"]}}. Roles: orders, boxes, labels, operator. '
        "See docs/security.md.",
    )

    principals_file: Path | None = Field(
        None,
        description="A JSON file of more principals, in the form of `principals` (mount a "
        "Kubernetes Secret here); read at start.",
    )

    api_token: SecretStr | None = Field(
        None,
        description="The token parcelflow's own commands (send, labels, void, demo traffic) "
        "present to the receiver: a client setting, not a server's.",
    )

    ingest_token: SecretStr | None = Field(
        None,
        description="Deprecated: a bearer token with every role in every warehouse (the "
        "principal 'default'). Use principals.",
    )

    ingest_tokens: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Deprecated: name → token, each with every role in every warehouse. "
        "Use principals.",
    )

    ingest_open: bool = Field(
        False,
        description="Development only: with no principal configured, callers without a "
        "token get every role. Refused unless the server listens on a loopback address.",
    )

    @field_validator("principals")
    @classmethod
    def _principal_names(cls, value: dict[str, PrincipalSpec]) -> dict[str, PrincipalSpec]:
        for name in value:
            if not PRINCIPAL_NAME.fullmatch(name):
                raise ValueError(
                    "a principal's name is 1 to 64 of A-Z a-z 0-9 . _ @ - (one name is not)"
                )
        return value


class TikTokSettings(Section):
    """The TikTok Shop app: keys, API addresses, tokens, limits."""

    tiktok_app_key: str = Field("", description="TikTok Shop app key.")

    tiktok_app_secret: SecretStr = Field(
        SecretStr(""), description="TikTok Shop app secret (signs webhooks and API calls)."
    )

    tiktok_webhook_apps: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="More TikTok apps whose webhooks the receiver accepts, as a JSON object "
        "app_key → app_secret (one per TikTok app; the primary app is tiktok_app_key).",
    )

    tiktok_api_base: str = Field(
        "https://open-api.tiktokglobalshop.com", description="TikTok Shop Open API base URL."
    )

    tiktok_auth_base: str = Field(
        "https://auth.tiktok-shops.com", description="TikTok Shop token service base URL."
    )

    tiktok_access_token: SecretStr = Field(SecretStr(""), description="Shop access token.")

    tiktok_refresh_token: SecretStr = Field(SecretStr(""), description="Shop refresh token.")

    tiktok_shop_cipher: str = Field("", description="Shop cipher for Open API calls.")

    tiktok_token_key: SecretStr = Field(
        SecretStr(""),
        description="Encrypts the tokens in tiktok.tokens.v1 (a Fernet key: `parcelflow "
        "tokens key` makes one). Every enricher replica and the tokens command need the "
        "same key; the enricher refuses to start without one.",
    )

    tiktok_token_file: Path | None = Field(
        Path("var/tiktok-tokens.json"),
        description="Migration only: a token file of earlier versions. Its shops that "
        "tiktok.tokens.v1 does not know are imported when an enricher starts (or by "
        "`parcelflow tokens import`); the file is never written.",
    )

    tiktok_refresh_race_wait_s: float = Field(
        3.0,
        ge=0,
        description="After TikTok refuses a refresh token, how long an enricher waits for "
        "another replica's refreshed tokens in tiktok.tokens.v1 before it declares the shop "
        "unauthorized (a refresh token can be used once).",
    )

    tiktok_refresh_before_s: float = Field(
        24 * 3600.0,
        ge=0,
        description="Refresh a shop's access token this long before it expires.",
    )

    tiktok_rate_limit_qps: float = Field(
        50.0,
        gt=0,
        description="TikTok's limit of calls per second per app and shop, shared by every "
        "process that calls TikTok: each enricher replica, and each labeler replica where a "
        "shop gets TikTok Shipping labels, takes an equal share (their consumer groups' "
        "members, read from the broker every tiktok_budget_every_s). In a process, one "
        "limiter per shop for every call: orders, packages, documents.",
    )

    tiktok_budget_every_s: float = Field(
        10.0,
        gt=0,
        description="How often each process that calls TikTok counts the processes it "
        "shares tiktok_rate_limit_qps with.",
    )

    tiktok_batch_size: int = Field(
        50, ge=1, le=50, description="Order ids per Get Order Detail call."
    )

    tiktok_max_attempts: int = Field(
        8,
        ge=1,
        description="Attempts per Get Order Detail call (429, 503, timeouts...) before its "
        "webhooks are parked and tried again later.",
    )

    tiktok_timeout_s: float = Field(10.0, gt=0, description="Timeout of one TikTok API call.")


class LabelStoreSettings(Section):
    """Where label documents are kept (the labeler writes, the receiver serves them)."""

    label_dir: Path = Field(Path("var/labels"), description="The folder of the folder label store.")

    label_store: str = Field(
        "folder",
        pattern=r"^(folder|s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/[A-Za-z0-9!_.*'()/\-]*)?)$",
        description="Where label documents go: folder (PARCELFLOW_LABEL_DIR) or "
        "s3://bucket[/prefix] (any S3-compatible store; AWS credentials the usual way).",
    )

    label_s3_endpoint: str = Field(
        "", description="S3 endpoint URL for MinIO, GCS and others (empty: AWS)."
    )

    label_s3_region: str = Field("", description="S3 region (empty: the AWS default).")

    label_s3_sse: Literal["", "AES256", "aws:kms"] = Field(
        "", description="Server-side encryption of label objects (empty: the bucket's default)."
    )

    label_s3_kms_key_id: str = Field("", description="KMS key for aws:kms encryption.")

    label_s3_allow_unencrypted: bool = Field(
        False,
        description="Allow an S3 label store without PARCELFLOW_LABEL_S3_SSE (labels carry "
        "buyers' addresses): only where the bucket encrypts by a default you have checked.",
    )

    label_retention_days: float = Field(
        30.0,
        gt=0,
        description="Label documents, label records and box claims are deleted this long "
        "after they were written, by the labeler (both stores): labels carry the buyer's "
        "address. TikTok masks a US order's recipient 30 days after it completes.",
    )

    label_sweep_every_s: float = Field(
        3600.0, gt=0, description="How often each labeler deletes what is past retention."
    )

    label_formats: list[LabelFormat] = Field(
        default_factory=lambda: list[LabelFormat](["pdf"]),
        min_length=1,
        description="Label formats asked of Shipium (labelFormats) and stored, as JSON "
        '(e.g. ["pdf", "zpl"]); the first is what a station gets by default.',
    )


class BuyerDataSettings(Section):
    """Buyer data: how recipients are sealed, by whom the keys are held, how long kept."""

    buyer_kek: Literal["", "pkcs11", "kms", "local"] = Field(
        "",
        description="The key service of the key-encryption key that wraps the buyer data "
        "keys: pkcs11 (an HSM, or SoftHSM2), kms (AWS KMS), or local (a key in "
        "PARCELFLOW_BUYER_LOCAL_KEY, for development only). The receiver, the enricher and "
        "the labeler refuse to start without one.",
    )

    buyer_local_key: SecretStr = Field(
        SecretStr(""),
        description="The local key-encryption key, 32 bytes base64-encoded (`parcelflow "
        "keys local` makes one); only with PARCELFLOW_BUYER_KEK=local.",
    )

    buyer_pkcs11_library: Path = Field(
        Path("/usr/lib/softhsm/libsofthsm2.so"), description="The PKCS#11 module to load."
    )

    buyer_pkcs11_token: str = Field("parcelflow", description="The PKCS#11 token's label.")

    buyer_pkcs11_pin: SecretStr = Field(SecretStr(""), description="The PKCS#11 user PIN.")

    buyer_pkcs11_key_label: str = Field(
        "parcelflow-kek-1",
        min_length=1,
        max_length=64,
        description="The label of the AES key in the token that wraps new data keys. To "
        "rotate it, create a new key and name it here: keys wrapped by the old label still "
        "unwrap while the token keeps it.",
    )

    buyer_kms_key_id: str = Field(
        "", description="The KMS key (id, ARN or alias) that wraps new data keys."
    )

    buyer_kms_region: str = Field("", description="The KMS region (empty: the AWS default).")

    buyer_kms_endpoint: str = Field("", description="A KMS endpoint URL (empty: AWS).")

    buyer_key_rotate_s: float = Field(
        86_400.0,
        gt=0,
        description="A writer seals each shop's recipients under a data key of its own for "
        "at most this long, then under a new one (older ones stay readable).",
    )


class ReceiverSettings(
    WorkerSettings, AuthSettings, TikTokSettings, LabelStoreSettings, BuyerDataSettings
):
    """The receiver."""

    label_events_per_principal: int = Field(
        4, ge=1, description="Label event streams (GET /v1/labels/events) open per principal."
    )

    label_events_ping_s: float = Field(
        15.0, gt=0, description="A label event stream's heartbeat (an SSE comment) interval."
    )

    deauthorized_erase_after_s: float = Field(
        7 * 86_400.0,
        ge=0,
        description="When a seller de-authorizes the app (TikTok webhook type 6), the shop's "
        "buyer data is erased this long after (`parcelflow erase --cancel REQUEST_ID` "
        "before then keeps it, e.g. when the seller authorizes the app again).",
    )

    receiver_host: str = Field("127.0.0.1", description="Address the receiver listens on.")

    receiver_port: int = Field(8080, ge=0, description="Port the receiver listens on.")

    receiver_reuse_port: bool = Field(
        False,
        description="Let several receivers on one host listen on the same port "
        "(SO_REUSEPORT: the kernel spreads connections among them), as the devstack's "
        "scale run does.",
    )

    receiver_max_body_bytes: int = Field(
        512 * 1024,
        ge=1024,
        description="Largest request body accepted (413 above). At most the input limit "
        "(kafka_max_message_bytes less 64 KiB): what is accepted must fit a record.",
    )

    receiver_idle_timeout_s: float = Field(
        15.0,
        gt=0,
        description="A connection that has not sent a whole request (headers and body) "
        "this long after it opened, or after its last answer, is closed: bounds half-open "
        "and idle keep-alive connections.",
    )

    receiver_ack_timeout_s: float = Field(
        2.0,
        gt=0,
        description="How long the receiver waits for the broker's ack before answering 503 "
        "(keep it under TikTok's 3 s).",
    )

    receiver_linger_ms: int = Field(
        1,
        ge=0,
        description="How long the receiver's producer gathers writes into one batch. Every "
        "answer waits for its write, so this adds to each answer's latency.",
    )

    receiver_dedupe_window_s: float = Field(
        16 * 3600.0,
        ge=0,
        description="A webhook whose tts_notification_id was stored within this window is "
        "answered 200 and not stored again (TikTok retries over about 15 h).",
    )

    receiver_dedupe_max_ids: int = Field(
        300_000,
        ge=0,
        description="Most notification ids remembered for dedupe (bounds memory, about "
        "200 bytes each); the oldest are forgotten first.",
    )

    receiver_max_webhook_age_s: float = Field(
        24 * 3600.0,
        gt=0,
        description="A webhook whose timestamp is older than this is refused (400) and kept "
        "in the rejected topic: a replay, since TikTok stops retrying after about 15 h.",
    )

    receiver_max_clock_skew_s: float = Field(
        300.0, ge=0, description="How far in the future a webhook's timestamp may be."
    )

    receiver_request_timeout_s: float = Field(
        15.0,
        gt=0,
        description="A request whose body has not arrived this long after its headers is "
        "answered 408 and closed (headers are bounded by receiver_idle_timeout_s).",
    )

    @model_validator(mode="after")
    def _bodies_fit_records(self) -> ReceiverSettings:
        if self.receiver_max_body_bytes > self.max_input_bytes:
            raise ValueError(
                f"receiver_max_body_bytes ({self.receiver_max_body_bytes}) must be at most "
                f"kafka_max_message_bytes less 64 KiB ({self.max_input_bytes}): an accepted "
                "body must fit a Kafka record"
            )
        return self


class ProviderSettings(Section):
    """Which label provider makes each shop's labels (the labeler reads it; the enricher
    too, to know whether labeler replicas share TikTok's call limit)."""

    label_provider: Literal["shipium", "tiktok"] = Field(
        "shipium",
        description="Where labels come from by default: shipium (Shipium's TikTok Shop "
        "carrier) or tiktok (TikTok Shipping through the Fulfillment API, with the shop's "
        "tokens from tiktok.tokens.v1).",
    )

    label_providers: dict[str, Literal["shipium", "tiktok"]] = Field(
        default_factory=dict,
        description='Per shop id, the provider that makes its labels, as JSON {"7495": '
        '"tiktok"}; shops not named use label_provider.',
    )

    def providers_in_use(self) -> set[str]:
        return {self.label_provider, *self.label_providers.values()}


class TikTokWorkerSettings(WorkerSettings, TikTokSettings, ProviderSettings):
    """A worker that calls TikTok Shop with the shops' tokens: the enricher, and the
    labeler for shops whose labels come from TikTok Shipping."""


class EnricherSettings(TikTokWorkerSettings, BuyerDataSettings):
    """The enricher."""

    remorse_hold_s: int = Field(
        3600,
        ge=0,
        description="TikTok orders of the old flow (is_on_hold_order false: no ON_HOLD "
        "status, the buyer may still cancel for an hour after payment) get no label before "
        "paid_time plus this many seconds; 0 turns the hold off. TikTok asks for one hour.",
    )

    enricher_park_retry_s: float = Field(
        60.0,
        gt=0,
        description="A parked webhook (shop to re-authorize, TikTok not answering) is tried "
        "again after this long, and again while the cause lasts.",
    )


class PlannerSettings(WorkerSettings):
    """The planner (and the join rules the auditor replays)."""

    planner_data_dir: Path = Field(Path("var/planner"), description="Faust's local data directory.")

    planner_batch_size: int = Field(
        500, ge=1, description="Most events the planner joins in one batch (Faust take_events)."
    )

    planner_batch_wait_s: float = Field(
        0.01,
        gt=0,
        description="Longest the planner waits to fill a batch before joining it (the "
        "latency it adds; under a backlog batches fill at once).",
    )

    planner_batches_in_flight: int = Field(
        4,
        ge=1,
        description="Batches the planner has joined whose records the broker has not yet "
        "acknowledged, at most: the next batch is joined while earlier ones are written "
        "(1: each batch waits for the one before). Each batch's events are committed once "
        "its records and every earlier batch's are acknowledged.",
    )

    planner_forget_recipient_s: float = Field(
        600.0,
        gt=0,
        description="How long after an order's label job was made its planner state keeps "
        "the (sealed) recipient: then the state drops it (the job is on label-jobs.v1).",
    )

    planner_state_retention_s: float = Field(
        14 * 86_400.0,
        gt=0,
        description="How long after an order's label job was made its planner state is "
        "kept: then it is tombstoned in the table and its changelog.",
    )

    planner_tidy_every_s: float = Field(
        30.0,
        gt=0,
        description="How often each planner applies erasures and the two settings above to "
        "the states it holds.",
    )

    planner_hold_check_s: float = Field(
        1.0,
        gt=0,
        description="How often each planner looks for held orders whose hold has ended "
        "(TikTok's buyer remorse window) and releases them: the most a release is late.",
    )

    planner_stop_timeout_s: float = Field(
        8.0,
        gt=0,
        description="A planner asked to stop (SIGTERM), or whose join failed, exits within "
        "this long whatever it is waiting for (exit code 1 past it).",
    )

    planner_box_wait_s: float = Field(
        2 * 3600.0,
        gt=0,
        description="A box whose order has not arrived this long after it closed is "
        "dead-lettered ('order never arrived') with an alert, by the auditor. Should the "
        "order come later, the box is still planned.",
    )


class AuditorSettings(PlannerSettings):
    """The auditor: it replays the planner's join, with its settings."""

    auditor_repair_after_s: float = Field(
        120.0,
        gt=0,
        description="A box that should have a parcel plan (by the planner's own join rules) "
        "and has none this long after, or a released order with no label job this long "
        "after, is joined again by the planner (the auditor asks for it on planner.repairs.v1).",
    )

    auditor_label_after_s: float = Field(
        3600.0,
        gt=0,
        description="A label job without a label or failure this long after is reported "
        "(log line and metric).",
    )

    auditor_interval_s: float = Field(5.0, gt=0, description="How often the auditor checks.")

    auditor_lookback_s: float = Field(
        7 * 86400.0,
        gt=0,
        description="How far back the auditor reads its topics when it starts, and how long "
        "it remembers finished orders and labeled jobs. Longer than the longest wait from "
        "order to packing, or a box of an older order may be reported as orphaned.",
    )


class LabelerSettings(TikTokWorkerSettings, LabelStoreSettings, BuyerDataSettings):
    """The labeler: the label providers, flow control, retries, the warehouses it ships
    from."""

    labeler_on_hold_retry_s: float = Field(
        60.0,
        gt=0,
        description="TikTok Shipping: an order TikTok holds (the buyer may still cancel) is "
        "tried again after this long, until labeler_max_attempts or labeler_max_age_s.",
    )

    tiktok_document_max_bytes: int = Field(
        5 * 1024 * 1024,
        ge=1024,
        description="TikTok Shipping: the largest label document downloaded from doc_url.",
    )

    shipium_base_url: str = Field("https://api.shipium.com", description="Shipium API base URL.")

    shipium_api_key: SecretStr = Field(SecretStr(""), description="Shipium API key.")

    shipium_timeout_s: float = Field(60.0, gt=0, description="Timeout of one label call.")

    labeler_max_in_flight: int = Field(
        64,
        ge=1,
        description="Label calls in flight at most: the ceiling of the adaptive limit, or "
        "the fixed bound when labeler_adaptive is false.",
    )

    labeler_adaptive: bool = Field(
        True,
        description="Find the label provider's capacity from its latency and its 429/503/"
        "timeouts (workers/labeler/limiter.py); false: always labeler_max_in_flight.",
    )

    labeler_min_in_flight: int = Field(
        2, ge=1, description="The adaptive limit's floor: calls in flight at least allowed."
    )

    labeler_initial_in_flight: int = Field(
        16,
        ge=1,
        description="The adaptive limit once the first window (at most 4 calls in flight) "
        "measured the latency without a queue.",
    )

    labeler_warm_start: bool = Field(
        True,
        description="Replicas share their adaptive limits through labeler.limits.v1: one that "
        "starts, and every one on a rebalance, takes the group's capacity times its share of "
        "the label-jobs partitions, then probes from there (false: each starts cold).",
    )

    labeler_limit_report_s: float = Field(
        5.0, gt=0, description="How often each labeler replica reports its limit."
    )

    labeler_warm_window_s: float = Field(
        120.0,
        gt=0,
        description="Reports this recent still count when no replica reported within three "
        "report periods (the whole group restarted).",
    )

    labeler_resume_fraction: float = Field(
        0.97,
        gt=0,
        lt=1,
        description="At the in-flight bound the labeler pauses its partitions; it resumes "
        "once calls in flight fall to this fraction of the bound (the low-water mark).",
    )

    labeler_fetch_bytes: int = Field(
        128 * 1024,
        ge=16 * 1024,
        description="Most bytes the labeler fetches per partition at once: keeps the "
        "consumer's read-ahead small, so memory does not grow with the backlog.",
    )

    labeler_max_attempts: int = Field(5, ge=1, description="Attempts per label job.")

    labeler_max_age_s: float = Field(
        6 * 3600.0,
        gt=0,
        description="A job older than this (since the planner made it) is not retried again: "
        "its next retriable error fails it.",
    )

    labeler_backoff_base_s: float = Field(
        0.5, gt=0, description="First retry delay; doubles each attempt, with jitter."
    )

    labeler_backoff_max_s: float = Field(30.0, gt=0, description="Longest retry delay.")

    labeler_publish_timeout_s: float = Field(
        120.0,
        gt=0,
        description="How long the labeler keeps retrying a write the broker does not ack "
        "(a label, failure or attempt record); past it the labeler exits non-zero and the "
        "job, never committed, is read again after the restart.",
    )

    labeler_auth_retry_s: float = Field(
        30.0,
        gt=0,
        description="While Shipium rejects the API key (401/403): no new jobs are taken, "
        "and the call is retried this often until the key is accepted again.",
    )

    box_id_reuse_after_s: float = Field(
        7 * 86400.0,
        gt=0,
        description="A warehouse may give a box id to another order once the box's label "
        "is this old; before that, a second order's box with the same id is refused "
        "(box_id_in_use) and the fetch by box id names both orders.",
    )

    warehouses: dict[str, Warehouse] = Field(
        default_factory=dict,
        description="Per warehouse id (the order's warehouse_id): its ship-from address and "
        'Shipium fulfillment context, as JSON {"WH1": {"ship_from": {...}, '
        '"fulfillment_context": {...}}}. Empty: every order ships from PARCELFLOW_SHIP_FROM.',
    )

    seller_shipped: Literal["fail", "carrier-selection"] = Field(
        "fail",
        description="SELLER-shipped orders: fail (label-failures.v1, 'seller-shipped order') "
        "or carrier-selection (Shipium's ordinary carrier selection, no TikTok fields).",
    )

    ship_from: Address = Field(
        Address(
            name="Warehouse", street1="1 Dock Rd", city="Reno", state="NV", postal_code="89502"
        ),
        description="Ship-from address, as JSON with the fields of schemas.common.Address.",
    )


class DashboardSettings(WorkerSettings, AuthSettings):
    """The dashboard."""

    dashboard_host: str = Field(
        "127.0.0.1", description="Address the dashboard listens on (0.0.0.0 in a container)."
    )

    dashboard_port: int = Field(
        8070, ge=0, description="Port of the dashboard page, its API and its /metrics."
    )

    dashboard_auth: Literal["login", "proxy", "none"] = Field(
        "login",
        description="Who may open the dashboard: login (a principal with the operator role "
        "logs in with its token: an HttpOnly, SameSite=Strict session cookie), proxy (an "
        "auth proxy in front names the user in dashboard_proxy_header) or none (only when "
        "dashboard_host is a loopback address: the devstack).",
    )

    dashboard_session_key: SecretStr = Field(
        SecretStr(""),
        description="Signs the dashboard's session cookies (32+ random characters; the same "
        "on every replica). Empty: a random key per process (sessions end with a restart).",
    )

    dashboard_session_hours: float = Field(
        12.0, gt=0, le=24 * 30, description="How long a dashboard login lasts."
    )

    dashboard_cookie_secure: bool = Field(
        True,
        description="Mark the session cookie Secure (sent over HTTPS only). False only for "
        "a dashboard served over plain HTTP on a loopback address.",
    )

    dashboard_proxy_header: str = Field(
        "X-Forwarded-User",
        description="With dashboard_auth=proxy: the header in which the auth proxy (e.g. "
        "oauth2-proxy) names the signed-in user. Only the proxy may reach the dashboard.",
    )

    dashboard_proxy_operators: list[str] = Field(
        default_factory=list,
        description="With dashboard_auth=proxy: the users (as the proxy names them) who are "
        "operators, as a JSON list.",
    )

    dashboard_max_clients: int = Field(
        50, ge=1, description="Live pages (event streams) served at once; 503 beyond."
    )

    dashboard_metrics_urls: list[str] = Field(
        default_factory=list,
        description="The labelers' /metrics URLs (JSON list): the dashboard plots their "
        "adaptive concurrency limit over time. Empty: no plot.",
    )


class DevstackSettings(Section):
    """The devstack: the simulator and the chaos, soak and scale runs."""

    sim_host: str = Field("127.0.0.1", description="Address the simulator listens on.")

    sim_port: int = Field(8090, ge=0, description="Port the simulator listens on.")

    sim_label_latency_median_s: float = Field(
        2.0, ge=0, description="Median label call latency (lognormal)."
    )

    sim_label_latency_sigma: float = Field(0.35, ge=0, description="Lognormal sigma.")

    sim_label_per_parcel_s: float = Field(
        0.5, ge=0, description="Extra latency per additional parcel of a shipment."
    )

    sim_label_tail_probability: float = Field(
        0.02, ge=0, le=1, description="Share of label calls in the slow tail."
    )

    sim_label_tail_factor: float = Field(
        4.0, ge=1, description="How many times slower a tail call is."
    )

    sim_label_rate_limit: float = Field(
        0.0,
        ge=0,
        description="Label calls per second above which the simulator answers 429 (0: none).",
    )

    sim_label_capacity: int = Field(
        0,
        ge=0,
        description="Label calls the simulated provider takes at once (0: no limit); above "
        "it latency grows with the crowd, above twice it calls get 429 with Retry-After.",
    )

    sim_label_render: bool = Field(
        True,
        description="Render real 4x6 in labels (PDF, PNG, ZPL); false: a tiny PDF, for "
        "benchmarks that measure parcelflow and not the simulator.",
    )

    sim_seed: int = Field(7, description="Seed for the simulator's random latency.")

    sim_tiktok_token_ttl_s: float = Field(
        0.0,
        ge=0,
        description="Lifetime of the access tokens the simulated TikTok hands out on a "
        "refresh (0: 7 days, as TikTok). Short lifetimes make the enrichers refresh often.",
    )

    chaos_seconds: float = Field(
        300.0, gt=0, description="How long `parcelflow chaos` (`make chaos`) plays traffic."
    )

    devstack_broker_watch_s: float = Field(
        10.0,
        ge=0,
        description="How often the devstack reads its embedded broker (CPU, memory, how "
        "late records reach a reader) for its metrics and alert; 0 turns the watch off.",
    )
    devstack_broker_alert_age_s: float = Field(
        2.0,
        gt=0,
        description="The devstack alerts (alerts.v1, the dashboard, the terminal) when "
        "records reach a reader later than this for three readings in a row.",
    )
    devstack_broker_alert_cpu: float = Field(
        0.7,
        gt=0,
        description="... or when the embedded broker uses more than this share of a core.",
    )
    soak_minutes: float = Field(
        30.0, gt=0, description="How long `parcelflow soak` (`make soak`) plays traffic."
    )

    soak_rate: float = Field(
        20.0, gt=0, description="Demo orders a second (with their boxes) `parcelflow soak` sends."
    )


class Settings(
    ReceiverSettings,
    EnricherSettings,
    AuditorSettings,
    LabelerSettings,
    DashboardSettings,
    DevstackSettings,
):
    """Every setting: what the CLI, the devstack and the tests build. A worker takes only
    its own section (``LabelerSettings``...), so what it may read is plain from its type."""

    def as_env(self) -> dict[str, str]:
        """These settings as ``PARCELFLOW_`` variables, to start another process with."""
        env: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                text = value.get_secret_value()
            elif isinstance(value, BaseModel | dict | list):
                text = json.dumps(plain(value))
            elif isinstance(value, bool):
                text = "true" if value else "false"
            else:
                text = str(value)
            env[f"PARCELFLOW_{name.upper()}"] = text
        return env


def plain(value: Any) -> Any:
    """``value`` as JSON-ready data, secrets revealed (for another process's environment)."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, BaseModel):
        fields = {name: getattr(value, name) for name in type(value).model_fields}
        return {name: plain(v) for name, v in fields.items() if v is not None}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


# The sections in the order docs/configuration.md lists them.
SECTIONS: tuple[type[Section], ...] = (
    KafkaSettings,
    WorkerSettings,
    ReceiverSettings,
    AuthSettings,
    TikTokSettings,
    ProviderSettings,
    TikTokWorkerSettings,
    EnricherSettings,
    PlannerSettings,
    AuditorSettings,
    LabelerSettings,
    LabelStoreSettings,
    BuyerDataSettings,
    DashboardSettings,
    DevstackSettings,
)


def own_fields(section: type[Section]) -> list[str]:
    """The settings a section declares itself (not those of the sections it holds)."""
    return [name for name in section.__annotations__ if name in section.model_fields]
