#!/usr/bin/env bash
# The developer's (or CI's) side of a deployment: `just deploy|rollback|backup|restore HOST …`.
# Everything on the host is done by deploy/chitram-deploy, which this copies there with the
# Compose file; the host needs only Docker and the Compose plugin (docs/deployment/).
#
#   scripts/deploy.sh deploy HOST [--skip-tests] [--image IMAGE]
#   scripts/deploy.sh rollback|status|backup|backups|start HOST
#   scripts/deploy.sh restore HOST ID|latest
#
# HOST is anything ssh accepts (user@203.0.113.5, or a Host from ~/.ssh/config).
# Environment:
#   DEPLOY_DIR         the stack's folder on the host (default: chitram, in the SSH user's home)
#   DEPLOY_SSH_ARGS    extra ssh options, e.g. "-p 2222 -i ~/.ssh/chitram"
#   DEPLOY_REGISTRY    ship through this registry (e.g. ghcr.io/you/chitram) instead of
#                      `docker save | ssh docker load`; the host must be logged in to it
#   CHITRAM_BASE_IMAGE the base image `just build` starts from (default python:3.11-slim-bookworm)
#   DEPLOY_HEALTH_TIMEOUT, DEPLOY_KEEP_RELEASES   passed on to chitram-deploy on the host
set -euo pipefail
cd "$(dirname "$0")/.."

remote_dir="${DEPLOY_DIR:-chitram}"
read -ra ssh_args <<<"${DEPLOY_SSH_ARGS:-}"
deploy_files=(docker-compose.yml Caddyfile minio-init.sh chitram-deploy .env.production.example)

say() { printf 'deploy: %s\n' "$*"; }
die() {
    printf 'deploy: error: %s\n' "$*" >&2
    exit 1
}

# Run a command line on the host's shell. It is built (and quoted) here on purpose.
remote_shell() {
    # shellcheck disable=SC2029
    ssh "${ssh_args[@]}" "$host" "$1"
}

# Run a command on the host, each argument quoted for its shell.
on_host() { remote_shell "$(printf '%q ' "$@")"; }

# Run chitram-deploy on the host, with the DEPLOY_* settings given here.
chitram_deploy() {
    local settings=() name
    for name in DEPLOY_HEALTH_TIMEOUT DEPLOY_KEEP_RELEASES; do
        [ -z "${!name:-}" ] || settings+=("$name=${!name}")
    done
    on_host env "${settings[@]}" "$remote_dir/chitram-deploy" "$@"
}

# chitram:<commit>, with -dirty-<time> when the tree has changes that are not committed.
release_tag() {
    local tag
    tag="chitram:$(git rev-parse --short=12 HEAD)"
    if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
        tag="$tag-dirty-$(date -u +%Y%m%d%H%M%S)"
    fi
    echo "$tag"
}

ship() {
    local image="$1" remote
    if [ -n "${DEPLOY_REGISTRY:-}" ]; then
        remote="$DEPLOY_REGISTRY:${image#*:}"
        say "pushing $remote"
        docker tag "$image" "$remote"
        docker push "$remote"
        on_host docker pull "$remote"
        on_host docker tag "$remote" "$image"
    else
        say "shipping $image over SSH (docker save | docker load)"
        docker save "$image" | gzip -1 | remote_shell 'gunzip | docker load'
    fi
}

sync_files() {
    say "copying the stack's files to $host:$remote_dir"
    local dir
    dir="$(printf '%q' "$remote_dir")"
    # --overwrite writes into the existing files: Docker bind-mounts the Caddyfile by inode, and
    # `caddy reload` must see the new one.
    tar -C deploy -cf - "${deploy_files[@]}" | remote_shell "mkdir -p $dir && tar --overwrite -xf - -C $dir"
}

cmd_deploy() {
    local run_tests=1 image=""
    while [ "$#" -gt 0 ]; do
        case "$1" in
            --skip-tests) run_tests=0 ;;
            --image)
                image="${2:?--image needs an image name}"
                shift
                ;;
            *) die "unknown option $1 (see scripts/deploy.sh)" ;;
        esac
        shift
    done
    if [ -z "$image" ]; then
        if [ "$run_tests" -eq 1 ]; then
            say "running the tests first (--skip-tests skips them)"
            uv run pytest
        fi
        image="$(release_tag)"
        just build "$image" "${CHITRAM_BASE_IMAGE:-python:3.11-slim-bookworm}"
    fi
    docker image inspect "$image" >/dev/null || die "no image $image here"
    ship "$image"
    sync_files
    chitram_deploy deploy "$image"
}

main() {
    local command="${1:-}"
    host="${2:-}"
    [ -n "$command" ] && [ -n "$host" ] || die "usage: scripts/deploy.sh deploy|rollback|status|backup|backups|start|restore HOST [...]"
    shift 2
    case "$command" in
        deploy) cmd_deploy "$@" ;;
        rollback | status | backup | backups | start)
            chitram_deploy "$command"
            ;;
        restore) chitram_deploy restore "${1:?usage: scripts/deploy.sh restore HOST ID}" ;;
        *) die "unknown command $command" ;;
    esac
}

main "$@"
