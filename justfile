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

# Everything CI checks
check: lint typecheck test
