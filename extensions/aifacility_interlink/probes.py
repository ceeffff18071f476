"""Probes (startup, readiness, liveness) and lifecycle hooks (postStart, preStop) of offloaded containers.

The kubelet runs these next to the container; on a batch node the job does it: the runner supervises each
container with a bash `prober` (below) that follows the kubelet's rules (initialDelaySeconds, periodSeconds,
timeoutSeconds, success/failure thresholds; readiness and liveness wait for the startup probe) and leaves its
verdicts as files the plugin reads for `/status`, next to the container's log, under ``<job dir>/ctn/``:

- ``<kind>-<name>.started-ok``: the startup probe passed (or there is none): ContainerStatus.started
- ``<kind>-<name>.ready``: the readiness probe passes (or there is none): ContainerStatus.ready
- ``<kind>-<name>.restarts``, ``.last``, ``.backoff``: restartCount, lastState and CrashLoopBackOff after a
  container was killed for failing its liveness or startup probe (or its postStart hook) and restarted

What differs from the kubelet, and why:
- a postStart hook runs to completion *before* the container's command starts (the kubelet runs it right after
  the start, with no guarantee of order): a container can rely on what its hook prepared;
- containers are restarted only when killed for a failed probe or hook (restartPolicy Always or OnFailure), not
  when they exit by themselves: a batch job ends when its containers end;
- a pod's deletion sends TERM to the runner alone (`scancel --batch`): each container's preStop hook runs, then
  TERM to the container, KILL after terminationGracePeriodSeconds; the plugin cancels the job after the grace
  period if it still runs;
- an exec probe or hook runs in a sandbox of its own with the container's volumes, env and working dir, and
  shares the container's /tmp (a dir in the job dir, not a tmpfs, for containers that have exec probes or hooks);
- httpGet and tcpSocket probes reach the batch node's loopback unless `host` is set (the container shares the
  node's network); grpc probes and the sleep action are refused with a message.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable

from .contract import Container, Handler, Probe
from .volumes import PodError

PROBES = ("startup", "readiness", "liveness")
HOOKS = ("postStart", "preStop")
# The kubelet's back-off between restarts: 10 s, doubled each time, at most 5 minutes.
FIRST_BACKOFF_SECONDS = 10
MAX_BACKOFF_SECONDS = 300

SUPERVISOR = r"""
ms() { local t=$EPOCHREALTIME; echo $(( ${t%.*} * 1000 + 10#${t#*.} / 1000 )); }
# bounded SECONDS OUT CMD...: run CMD in a process group of its own; kill the group after SECONDS (0: never).
bounded() {
  set -m
  local secs=$1 out=$2 p w= rc; shift 2
  "$@" < /dev/null >> "$out" 2>&1 & p=$!
  if (( secs > 0 )); then { sleep "$secs"; kill -KILL -- -"$p"; } > /dev/null 2>&1 & w=$!; fi
  wait "$p"; rc=$?
  [[ -n $w ]] && { kill -KILL -- -"$w"; wait "$w"; } > /dev/null 2>&1
  return "$rc"
}
http_get() {  # host port path scheme header...: 2xx/3xx is success, as for the kubelet
  local host=$1 port=$2 path=$3 scheme=$4 code line h hs=(); shift 4
  if [[ $scheme == HTTPS ]]; then
    for h in "$@"; do hs+=(-H "$h"); done
    code=$(curl -ks -o /dev/null -w '%{http_code}' -A kube-probe/1 ${hs[@]+"${hs[@]}"} "https://$host:$port$path") \
      || return 1
  else
    exec 3<>"/dev/tcp/$host/$port" || return 1
    printf 'GET %s HTTP/1.1\r\nHost: %s:%s\r\nUser-Agent: kube-probe/1\r\nAccept: */*\r\nConnection: close\r\n' \
      "$path" "$host" "$port" >&3
    for h in "$@"; do printf '%s\r\n' "$h" >&3; done
    printf '\r\n' >&3
    read -r line <&3 || return 1
    code=${line#* }; code=${code%% *}
  fi
  [[ $code =~ ^[0-9]+$ ]] && (( code >= 200 && code < 400 ))
}
tcp_open() { exec 3<>"/dev/tcp/$1/$2"; }
oom_kills() {  # the job's cgroup OOM-kill count (cgroup v1 or v2), 0 when unknown
  local cg n=0
  cg=$(sed -n 's/^[0-9]*:[^:]*memory[^:]*:\(.*\)$/\1/p' /proc/self/cgroup 2>/dev/null | head -n1)
  if [[ -n $cg && -r /sys/fs/cgroup/memory$cg/memory.oom_control ]]; then
    n=$(sed -n 's/^oom_kill //p' "/sys/fs/cgroup/memory$cg/memory.oom_control")
  else
    cg=$(sed -n 's/^0::\(.*\)$/\1/p' /proc/self/cgroup 2>/dev/null)
    [[ -n $cg && -r /sys/fs/cgroup$cg/memory.events ]] \
      && n=$(sed -n 's/^oom_kill //p' "/sys/fs/cgroup$cg/memory.events")
  fi
  echo "${n:-0}"
}
# stop_ctn KIND INDEX FILE PID WHY GRACE: preStop, then TERM to the container's group; KILL once GRACE s have
# passed since the stop began (the hook's time counts, as for the kubelet).
stop_ctn() {
  local k=$1 i=$2 f=$3 pid=$4 why=$5 grace=$6 deadline
  deadline=$(( $(ms) + grace * 1000 ))
  echo "$why" > "$f.killed"; rm -f -- "$f.ready"
  if declare -F "hook_${k}_${i}_preStop" > /dev/null; then bounded "$grace" "$f.hooks" "hook_${k}_${i}_preStop"; fi
  term_ctn "$pid"
  # Once the main process has ended, what it left behind goes with it (a pid namespace's end, for the kubelet).
  while (( $(ms) < deadline )); do
    if [[ -n $MAIN_PIDS ]]; then alive $MAIN_PIDS || break; else kill -0 -- -"$pid" 2>/dev/null || break; fi
    sleep 0.2
  done
  kill -KILL -- -"$pid" 2>/dev/null
}
alive() { local p; for p; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }
# term_ctn PID: TERM to what the container runs, as the kubelet sends it to the container's main process, and its
# pids in MAIN_PIDS. Under bwrap that is bwrap's child: bwrap itself would die of it and take the sandbox down
# with SIGKILL (--die-with-parent) before the process could handle it. Elsewhere, the container's process group
# (MAIN_PIDS empty).
term_ctn() {
  local b c
  MAIN_PIDS=
  for b in $(pgrep -g "$1" -x bwrap 2>/dev/null); do
    for c in $(pgrep -P "$b" 2>/dev/null); do kill -TERM "$c" 2>/dev/null && MAIN_PIDS+="$c "; done
  done
  [[ -n $MAIN_PIDS ]] || kill -TERM -- -"$1" 2>/dev/null
}
# prober KIND INDEX FILE PID GRACE: the container's probes until it ends (PROBE_<kind>_<i>_<type> holds
# initialDelay period timeout successThreshold failureThreshold).
prober() {
  set -m
  local k=$1 i=$2 f=$3 pid=$4 grace=$5 t0 now type cfg started=yes
  local -A due=() good=() bad=()
  t0=$(ms)
  for type in startup readiness liveness; do
    declare -F "probe_${k}_${i}_$type" > /dev/null || continue
    cfg="PROBE_${k}_${i}_$type[0]"; due[$type]=$(( t0 + ${!cfg} * 1000 )); good[$type]=0; bad[$type]=0
  done
  [[ -n ${due[startup]-} ]] && started=no
  if [[ $started == yes ]]; then
    touch "$f.started-ok"; [[ -n ${due[readiness]-} ]] || touch "$f.ready"
  fi
  while kill -0 "$pid" 2>/dev/null; do
    for type in startup readiness liveness; do
      [[ -n ${due[$type]-} ]] || continue
      [[ $type == startup ]] && [[ $started == yes ]] && continue
      [[ $type != startup ]] && [[ $started == no ]] && continue
      now=$(ms); (( now >= due[$type] )) || continue
      local -n c="PROBE_${k}_${i}_$type"
      due[$type]=$(( now + c[1] * 1000 ))
      if bounded "${c[2]}" /dev/null "probe_${k}_${i}_$type"; then
        good[$type]=$(( good[$type] + 1 )); bad[$type]=0
      else
        bad[$type]=$(( bad[$type] + 1 )); good[$type]=0
      fi
      case $type in
        startup)
          if (( good[startup] >= 1 )); then
            started=yes; touch "$f.started-ok"; [[ -n ${due[readiness]-} ]] || touch "$f.ready"
          elif (( bad[startup] >= c[4] )); then
            stop_ctn "$k" "$i" "$f" "$pid" StartupProbe "$grace"; return
          fi ;;
        readiness)
          if (( good[readiness] >= c[3] )); then touch "$f.ready"
          elif (( bad[readiness] >= c[4] )); then rm -f -- "$f.ready"; fi ;;
        liveness)
          if (( bad[liveness] >= c[4] )); then stop_ctn "$k" "$i" "$f" "$pid" LivenessProbe "$grace"; return; fi ;;
      esac
      unset -n c
    done
    sleep 0.2
  done
}
# supervise KIND NAME INDEX RESTART GRACE: run a container (postStart first) with its probes; restart it after
# a probe or hook killed it when RESTART is yes. Writes "<exit code> <finishedAt> <why>" to FILE.status.
supervise() {
  set -m
  local k=$1 n=$2 i=$3 restart=$4 grace=$5 f="$CTN/$1-$2" rc pid pp why oom restarts=0 backoff=__BACKOFF__
  local stopping=
  trap 'stopping=yes' TERM  # the pod is deleted: stop the container as the kubelet does (below)
  while :; do
    rm -f -- "$f.ready" "$f.started-ok" "$f.killed" "$f.backoff"
    now > "$f.started"
    why= pp=
    oom=$(oom_kills)
    if declare -F "hook_${k}_${i}_postStart" > /dev/null && ! bounded 0 "$f.hooks" "hook_${k}_${i}_postStart"; then
      rc=137 why=FailedPostStartHook
    else
      ( "ctn_${k}_${i}" < /dev/null 2>&1 | stamp >> "$f.out"; exit "${PIPESTATUS[0]}" ) & pid=$!
      if declare -p "PROBES_${k}_${i}" > /dev/null 2>&1; then
        prober "$k" "$i" "$f" "$pid" "$grace" & pp=$!
      else
        touch "$f.started-ok" "$f.ready"
      fi
      wait "$pid"; rc=$?
      if [[ -n $stopping ]] && kill -0 "$pid" 2> /dev/null; then
        [[ -n $pp ]] && { kill -KILL -- -"$pp"; wait "$pp"; } > /dev/null 2>&1
        pp=
        stop_ctn "$k" "$i" "$f" "$pid" Stopped "$grace"
        wait "$pid"; rc=$?
      fi
      [[ -n $pp ]] && { kill -KILL -- -"$pp"; wait "$pp"; } > /dev/null 2>&1
      [[ -e $f.killed ]] && why=$(< "$f.killed")
      (( rc == 137 )) && [[ -z $why ]] && (( $(oom_kills) > oom )) && why=OOMKilled
    fi
    rm -f -- "$f.ready"
    if [[ -z $stopping && $restart == yes && $why =~ ^(LivenessProbe|StartupProbe|FailedPostStartHook)$ ]]; then
      restarts=$(( restarts + 1 ))
      printf '%s %s %s %s\n' "$rc" "$(< "$f.started")" "$(now)" "$why" > "$f.last.tmp" && mv -- "$f.last.tmp" "$f.last"
      echo "$restarts" > "$f.restarts"
      touch "$f.backoff"; sleep "$backoff" & wait $!
      kill $! 2> /dev/null
      [[ -n $stopping ]] && break
      backoff=$(( backoff * 2 > __MAX_BACKOFF__ ? __MAX_BACKOFF__ : backoff * 2 ))
      continue
    fi
    break
  done
  printf '%s %s %s\n' "$rc" "$(now)" "$why" > "$f.status.tmp" && mv -- "$f.status.tmp" "$f.status"
  return "$rc"
}
""".replace("__BACKOFF__", str(FIRST_BACKOFF_SECONDS)).replace("__MAX_BACKOFF__", str(MAX_BACKOFF_SECONDS))

ExecCommand = Callable[[list[str]], str]


def _q(value: object) -> str:
    return shlex.quote(str(value))


def _port(c: Container, port: int | str, what: str) -> int:
    if isinstance(port, int) or port.isdigit():
        number = int(port)
    else:
        named = {p.name: p.containerPort for p in c.ports or [] if p.name}
        if port not in named:
            raise PodError(f"container {c.name!r}: {what} names port {port!r}, which the container does not "
                           f"declare (it has {sorted(named) or 'no named ports'})")
        number = named[port]
    if not 1 <= number <= 65535:
        raise PodError(f"container {c.name!r}: {what} port {number} is not between 1 and 65535")
    return number


def _action(c: Container, h: Handler, what: str, exec_command: ExecCommand) -> str:
    given = [k for k in ("exec", "httpGet", "tcpSocket") if getattr(h, k) is not None]
    other = sorted(set(h.model_extra or {}) & {"grpc", "sleep"})
    if other:
        raise PodError(f"container {c.name!r}: {what} uses {other[0]}, which offloaded pods do not support; "
                       "use exec, httpGet or tcpSocket")
    if len(given) != 1:
        raise PodError(f"container {c.name!r}: {what} must have exactly one of exec, httpGet, tcpSocket")
    if h.exec is not None:
        return exec_command(h.exec.command)
    if h.httpGet is not None:
        g = h.httpGet
        scheme = g.scheme.upper()
        if scheme not in ("HTTP", "HTTPS"):
            raise PodError(f"container {c.name!r}: {what} scheme {g.scheme!r} is not HTTP or HTTPS")
        path = g.path if g.path.startswith("/") else "/" + g.path
        if any(ch.isspace() for ch in path):
            raise PodError(f"container {c.name!r}: {what} path {path!r} contains white space")
        headers = []
        for hd in g.httpHeaders or []:
            if not hd.name or any(not ch.isprintable() or ch in ":\r\n" for ch in hd.name) or "\n" in hd.value \
                    or "\r" in hd.value:
                raise PodError(f"container {c.name!r}: {what} header {hd.name!r} is not a valid HTTP header")
            headers.append(f"{hd.name}: {hd.value}")
        port = _port(c, g.port, what)
        return " ".join(_q(a) for a in ["http_get", g.host or "127.0.0.1", port, path, scheme, *headers])
    assert h.tcpSocket is not None
    t = h.tcpSocket
    return f"tcp_open {_q(t.host or '127.0.0.1')} {_port(c, t.port, what)}"


def has_exec(c: Container) -> bool:
    """Whether an exec probe or hook must share the container's /tmp."""
    handlers: list[Handler | None] = [c.startupProbe, c.readinessProbe, c.livenessProbe]
    if c.lifecycle is not None:
        handlers += [c.lifecycle.postStart, c.lifecycle.preStop]
    return any(h is not None and h.exec is not None for h in handlers)


def render(kind: str, i: int, c: Container, exec_command: ExecCommand) -> list[str]:
    """Bash definitions for the container's probes and hooks (none: the container runs unsupervised)."""
    out: list[str] = []
    probes: list[tuple[str, Probe]] = [(t, p) for t, p in zip(PROBES, (c.startupProbe, c.readinessProbe,
                                                                      c.livenessProbe), strict=True) if p]
    for t, p in probes:
        if t in ("startup", "liveness") and p.successThreshold != 1:
            raise PodError(f"container {c.name!r}: {t}Probe.successThreshold must be 1 (as Kubernetes requires)")
        out.append(f"probe_{kind}_{i}_{t}() {{ {_action(c, p, f'{t}Probe', exec_command)}; }}")
        out.append(f"PROBE_{kind}_{i}_{t}=({p.initialDelaySeconds} {p.periodSeconds} {p.timeoutSeconds} "
                   f"{p.successThreshold} {p.failureThreshold})")
    if probes:
        out.append(f"PROBES_{kind}_{i}=1")
    for hook in HOOKS:
        h = getattr(c.lifecycle, hook) if c.lifecycle is not None else None
        if h is not None:
            out.append(f"hook_{kind}_{i}_{hook}() {{ {_action(c, h, f'lifecycle.{hook}', exec_command)}; }}")
    return out
