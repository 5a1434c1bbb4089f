"""Names vulture cannot see used: they are read by a framework, a template or by name.

tests/system/test_dead_code.py runs vulture over the code with this file (settings under
[tool.vulture] in pyproject.toml); anything it then reports is dead and goes. A name is added
here only with the reason it is live. Route handlers, CLI commands, Celery tasks and validators
are covered by `ignore_decorators` there, not listed here.
"""

# ruff: noqa: F821

# Pydantic: the model's configuration, and response fields written into a model, serialised by FastAPI.
_.model_config
_.first_broken             # app/integrity/schemas.py VerifyReport
_.algorithm                # app/certificates/router.py signing-key document
_.checkpoint_verifier_key  # app/certificates/router.py signing-key document
_.destroyed                # datasets, lineage and models response schemas
_.finished_at              # jobs response schema; also a column (below)
_.successor                # app/keys/schemas.py rotation answer
_.chain_valid              # app/requests/schemas.py audit trail
_.links_digest             # app/identities/router.py link answer
_.description              # FamilySpec and each unlearning method: documentation kept on the object
_.base_id                  # HFCausalLMConfig: stored in params, read from them (app/unlearning/service.py)
_.architecture             # HFCausalLMConfig: likewise

# SQLAlchemy: columns written through the constructor or by keyword, read back by other processes or SQL.
_.issued_at                # certificates
_.started_by               # dashboard verification runs (templates read it)
_.chains_total
_.chains_done
_.added_at                 # jobs' requests
_.last_status              # webhook deliveries
_.last_error
# SQLAlchemy TypeDecorator protocol (app/db.py UTCDateTime) and the DB-API connection attribute
# set on connect.
_.impl
_.cache_ok
_.process_bind_param
_.process_result_value
_.isolation_level

# Jinja templates under app/dashboard/templates read these.
_.reference_label
_.points
_.due_soon
_.jobs_running
_.jobs_failed
_.last_verification
_.query_args
_.svg                      # the forest plot's markup (app/dashboard/charts.py), in _figures.html
_.plot                     # a job's forest plot on the request page (app/dashboard/pages_requests.py)

# Loaded by "module:attribute" strings: families (app/families/builtin.py), unlearning methods
# (workers/engine/unlearning/base.py), the ASGI app factory (app/cli/serve.py, uvicorn --factory),
# and the module __getattr__ that builds METHODS on first use.
LogisticRegressionFamily
MLPFamily
CNNFamily
CausalLMFamily
HFCausalLMFamily
FineTune
NegGradPlus
Scrub
SalUn
CertifiedNewton
GradientDifference
NPO
DiffusionSalUn
DiffusionGradientDifference
create_app
__getattr__

# hf_causal_lm params the service fills from the model's base by key (app/models/bases.py,
# resolve); the workers' family reads them to fetch the base's archive by its hash.
_.base_id
_.base_archive_sha256

# torch calls nn.Module.forward through __call__.
_.forward

# Library protocols: prometheus_client collectors, anyio's limiter, tarfile members, kombu's
# transport and Celery's beat configuration.
_.describe
_.total_tokens
_.mtime
_.polling_interval
_.beat_schedule

# The webhook receiver's side of the signature scheme (docs/api.md, "Webhooks"): what a client runs,
# exercised end to end by tests/unlearning/test_unlearning_e2e.py.
verify_signature

# Test and benchmark harness: scratch databases (tests/conftest.py, bench/intake.py), dropping
# cached engines, settings, keys and known identifier kinds between tests, and the marker tests/security/test_lock_starvation.py
# checks on every route's endpoint.
create_scratch_database
drop_database
dispose_engine
reset_settings
clear_cache
forget_seen_known
_.unit_of_work
# bench/language.py reports a model's text figures with the job's own functions (the job counts
# them from per-record figures it also judges: workers/engine/unlearning/verification.py).
membership_aucs
verbatim_extraction
# bench/verification.py judges each result's networks with the job's checks in one call (the job
# computes the records' evidence once and judges each request of a batch on it: `evidence_checks`).
forgetting_checks

# The family interface's per-example loss: part of the ModelFamily protocol a plugin implements
# (docs/datasets-and-models.md, "Model families"); today's verification computes its own
# (workers.engine.training.cross_entropy_per_example). Whether families keep it is decided with
# the unlearning backbone, which reworks workers.engine.training and families.base.
_.loss_per_example

# The job runner loads each kind's failure hook by "module:attribute" (app/jobs/service.py ON_FAILED).
fail_requests
fail_run
fail_request

# Pillow's own decompression-bomb limit, set to OBLIVIATE_MAX_IMAGE_PIXELS (app/datasets/images.py).
_.MAX_IMAGE_PIXELS
# The image family's U-Net arguments: the worker builds diffusers' UNet2DModel from them
# (workers.engine.families.image_diffusion), and the API counts its shapes from the same.
unet_kwargs
