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
deploy_files=(docker-compose.yml Caddyfile garage.toml monitoring chitram-deploy .env.production.example)

say() { printf 'deploy: %s\n' "$*"; }
die() {
    printf 'deploy: error: %s\n' "$*" >&2
    exit 1
}

# Run a command line on the host's shell. It is built (and quoted) here on purpose.
# (${a[@]+"${a[@]}"}: an empty array under `set -u` on bash 3.2, macOS's.)
remote_shell() {
    # shellcheck disable=SC2029
    ssh ${ssh_args[@]+"${ssh_args[@]}"} "$host" "$1"
}

# Run a command on the host, each argument quoted for its shell.
on_host() { remote_shell "$(printf '%q ' "$@")"; }

# Run chitram-deploy on the host (the installed one, or the one in an upload folder given
# with --from), with the DEPLOY_* settings given here.
chitram_deploy() {
    local settings=() name script="$remote_dir/chitram-deploy"
    if [ "$1" = --from ]; then
        script="$2/chitram-deploy"
        shift 2
    fi
    for name in DEPLOY_HEALTH_TIMEOUT DEPLOY_KEEP_RELEASES; do
        [ -z "${!name:-}" ] || settings+=("$name=${!name}")
    done
    on_host env ${settings[@]+"${settings[@]}"} "$script" "$@"
}

# chitram:<commit>[-dirty]-<UTC time>: every build gets a name of its own, so a rebuild of the
# same commit never takes the name of the image running on the host.
release_tag() {
    local tag
    tag="chitram:$(git rev-parse --short=12 HEAD)"
    if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
        tag="$tag-dirty"
    fi
    echo "$tag-$(date -u +%Y%m%d%H%M%S)"
}

ship() {
    local image="$1" remote here_id there_id
    # A different build under the same name would take the name from the image running there.
    here_id="$(docker image inspect --format '{{.Id}}' "$image")"
    there_id="$(on_host docker image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)"
    if [ -n "$there_id" ] && [ "$there_id" != "$here_id" ]; then
        die "$host already has a different build named $image; build under a new tag (just build TAG)"
    fi
    if [ -n "${DEPLOY_REGISTRY:-}" ]; then
        remote="$DEPLOY_REGISTRY:${image#*:}"
        say "pushing $remote"
        docker tag "$image" "$remote"
        docker push "$remote"
        on_host docker pull "$remote"
        on_host docker tag "$remote" "$image"
        on_host docker image rm "$remote" >/dev/null  # the release keeps its own name only
    else
        say "shipping $image over SSH (docker save | docker load)"
        docker save "$image" | gzip -1 | remote_shell 'gunzip | docker load'
    fi
}

# Upload the stack's files into a new folder beside the stack on the host and print its path;
# the chitram-deploy in it puts them in place once it holds the host's lock.
upload_files() {
    local dir incoming
    dir="$(printf '%q' "$remote_dir")"
    incoming="$(remote_shell "mkdir -p $dir && mktemp -d $dir/.incoming.XXXXXX")"
    tar -C deploy -cf - "${deploy_files[@]}" | remote_shell "tar -xf - -C $(printf '%q' "$incoming")"
    echo "$incoming"
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
    say "copying the stack's files to $host:$remote_dir"
    chitram_deploy --from "$(upload_files)" deploy "$image"
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
