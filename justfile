# Chitram's tasks. `uv run just --list` shows them; `rust-just` comes with the dev dependencies.

set dotenv-load := false
export UV_PYTHON_DOWNLOADS := "never"

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

# Lint and check formatting
lint:
    uv run ruff check .
    uv run ruff format --check .

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

# Back up now (create, verify, prune) with the CHITRAM_* settings of this shell; DEST as in `chitram-admin backup --help`
backup DEST="":
    uv run chitram-admin backup run {{ if DEST == "" { "" } else { "--dest " + quote(DEST) } }}

# List the backups (newest last)
backups DEST="":
    uv run chitram-admin backup list {{ if DEST == "" { "" } else { "--dest " + quote(DEST) } }}

# Restore backup ID (or `latest`) into the configured database and storage; stop the app first
restore ID DEST="":
    uv run chitram-admin backup restore {{quote(ID)}} {{ if DEST == "" { "" } else { "--dest " + quote(DEST) } }}

# Seed a stack with IMAGES photos, then time backup, verify and restore against a plain copy (both stacks)
backup-drill IMAGES="300" STACK="both":
    uv run python -m scripts.backup_drill --images {{IMAGES}} --stack {{STACK}}

# Everything CI checks
check: lint typecheck test

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
