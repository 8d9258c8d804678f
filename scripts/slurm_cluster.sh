#!/usr/bin/env bash
# Single-node Slurm "cluster" for tests (Debian bookworm, run as root, no systemd).
#
# Usage: scripts/slurm_cluster.sh {install|start|stop|status|env}
#
#   install  apt-get installs slurm-wlm + munge (idempotent; `apt-get update` only when
#            the package lists are missing or the packages are not found).
#   start    creates a munge key if missing, starts munged, writes slurm.conf, starts
#            slurmctld + slurmd and waits (<= ESM_TCAV_SLURM_TIMEOUT s, default 60) until
#            the node is idle. Idempotent: does nothing if the cluster is already healthy.
#   stop     kills slurmd, slurmctld and munged via their pid files and waits for exit.
#   status   prints `sinfo` output, or "slurm cluster: not running" (exit 1).
#   env      prints the `export SLURM_CONF=...` line.
#
# Everything lives under the state folder ${ESM_TCAV_SLURM_DIR:-/tmp/esm-tcav-slurm}:
#   slurm.conf, pid files, logs (log/), spool and state dirs, munge key/socket.
# The config is NOT written to /etc/slurm: clients (sbatch, squeue, sinfo, scontrol, ...)
# must see SLURM_CONF=$ESM_TCAV_SLURM_DIR/slurm.conf in their environment; `start` and `env`
# print the export line. Munge uses its own socket under the state folder, which is
# baked into slurm.conf (AuthInfo=socket=...), so clients need nothing else.
set -euo pipefail

STATE_DIR="${ESM_TCAV_SLURM_DIR:-/tmp/esm-tcav-slurm}"
TIMEOUT="${ESM_TCAV_SLURM_TIMEOUT:-60}"
CONF="$STATE_DIR/slurm.conf"
LOG_DIR="$STATE_DIR/log"
MUNGE_DIR="$STATE_DIR/munge"
MUNGE_KEY="$MUNGE_DIR/munge.key"
MUNGE_SOCKET="$MUNGE_DIR/munge.socket"
MUNGE_PID="$MUNGE_DIR/munged.pid"
CTLD_PID="$STATE_DIR/slurmctld.pid"
SLURMD_PID="$STATE_DIR/slurmd.pid"
NODE="$(hostname -s)"
# everything talks over loopback: the node is this host only
ADDR="${ESM_TCAV_SLURM_ADDR:-127.0.0.1}"

export SLURM_CONF="$CONF"

log() { printf '[slurm_cluster] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

need_root() {
  [[ $(id -u) -eq 0 ]] || die "must run as root"
}

# ---------------------------------------------------------------- install
cmd_install() {
  need_root
  local pkgs=(slurm-wlm munge)
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
     && command -v sbatch >/dev/null && command -v munged >/dev/null; then
    log "slurm-wlm and munge already installed"
    return 0
  fi
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-cache show "${pkgs[@]}" >/dev/null 2>&1; then
    log "apt-get update"
    apt-get update -qq
  fi
  log "apt-get install ${pkgs[*]}"
  apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
  command -v sbatch >/dev/null || die "sbatch not found after install"
  log "installed slurm-wlm $(dpkg-query -W -f='${Version}' slurm-wlm)"
}

# ---------------------------------------------------------------- helpers
proc_running() {  # proc_running PID -- true if PID exists and is not a zombie
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"          # drop "pid (comm) "; the state letter comes first
  [[ "${stat:0:1}" != Z ]]
}

pid_alive() {  # pid_alive PIDFILE -- the daemon named like the pid file is running
  local pid name
  [[ -s "$1" ]] || return 1
  pid="$(cat "$1")"
  name="$(basename "$1" .pid)"
  [[ "$pid" =~ ^[0-9]+$ ]] && proc_running "$pid" \
    && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$name"* ]]  # not a recycled pid
}

node_state() {
  sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -n1 || true
}

node_ready() {  # node_ready STATE -- responding (no trailing '*') and schedulable
  [[ "$1" =~ ^(idle|mixed|allocated|completing)$ ]]
}

healthy() {
  pid_alive "$MUNGE_PID" && pid_alive "$CTLD_PID" && pid_alive "$SLURMD_PID" \
    && [[ -f "$CONF" ]] && node_ready "$(node_state)"
}

dump_logs() {
  local f
  for f in "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" "$LOG_DIR/munged.log"; do
    if [[ -f "$f" ]]; then
      log "---- tail $f"
      tail -n 30 "$f" >&2 || true
    fi
  done
  log "---- sinfo"
  sinfo -N -l >&2 2>&1 || true
}

print_env() {
  echo "export SLURM_CONF=$CONF"
}

start_munge() {
  mkdir -p "$MUNGE_DIR" "$LOG_DIR"
  chmod 0755 "$MUNGE_DIR"  # clients need +x to reach the socket; the key itself is 0400
  if [[ ! -s "$MUNGE_KEY" ]]; then
    log "creating munge key $MUNGE_KEY"
    if command -v mungekey >/dev/null; then
      mungekey --create --keyfile="$MUNGE_KEY" --force
    else
      dd if=/dev/urandom of="$MUNGE_KEY" bs=1 count=1024 status=none
    fi
    chmod 0400 "$MUNGE_KEY"
  fi
  if pid_alive "$MUNGE_PID"; then
    return 0
  fi
  rm -f "$MUNGE_PID" "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
  # --force: munged refuses to run as root / with non-standard dir permissions otherwise.
  munged --force \
    --key-file="$MUNGE_KEY" \
    --socket="$MUNGE_SOCKET" \
    --pid-file="$MUNGE_PID" \
    --log-file="$LOG_DIR/munged.log" \
    --seed-file="$MUNGE_DIR/munged.seed"
  local i
  for ((i = 0; i < 50; i++)); do
    [[ -S "$MUNGE_SOCKET" ]] && pid_alive "$MUNGE_PID" && break
    sleep 0.1
  done
  munge -S "$MUNGE_SOCKET" -n | unmunge -S "$MUNGE_SOCKET" >/dev/null \
    || { dump_logs; die "munge self-test failed"; }
}

write_conf() {
  local cfg cpus boards sockets cores threads mem
  # `slurmd -C` prints e.g. "NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1
  # CoresPerSocket=2 ThreadsPerCore=1 RealMemory=23993"; it needs no slurm.conf.
  cfg="$(slurmd -C 2>/dev/null | head -n1)"
  field() { sed -n "s/.*\b$1=\([0-9]*\).*/\1/p" <<<"$cfg"; }
  cpus="$(field CPUs)"; boards="$(field Boards)"; sockets="$(field SocketsPerBoard)"
  cores="$(field CoresPerSocket)"; threads="$(field ThreadsPerCore)"; mem="$(field RealMemory)"
  [[ -n "$cpus" && -n "$mem" ]] || die "could not parse 'slurmd -C' output: $cfg"
  # leave a little memory headroom so the node never drains for low memory
  mem=$(( mem * 95 / 100 ))
  mkdir -p "$STATE_DIR/ctld" "$STATE_DIR/spool" "$LOG_DIR"
  cat >"$CONF.tmp" <<CONF
# generated by scripts/slurm_cluster.sh -- do not edit
ClusterName=esmtcav
SlurmctldHost=$NODE($ADDR)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=${ESM_TCAV_SLURMCTLD_PORT:-6817}
SlurmdPort=${ESM_TCAV_SLURMD_PORT:-6818}
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
StateSaveLocation=$STATE_DIR/ctld
SlurmdSpoolDir=$STATE_DIR/spool
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=256
ReturnToService=2
MinJobAge=600
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
DependencyParameters=kill_invalid_depend
MailProg=/bin/true
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
Waittime=0
MaxArraySize=10001
NodeName=$NODE NodeAddr=$ADDR NodeHostname=$NODE CPUs=$cpus Boards=${boards:-1} SocketsPerBoard=${sockets:-1} CoresPerSocket=${cores:-$cpus} ThreadsPerCore=${threads:-1} RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
  mv "$CONF.tmp" "$CONF"
}

# ---------------------------------------------------------------- start/stop
cmd_start() {
  need_root
  command -v slurmctld >/dev/null || die "slurm not installed: run scripts/slurm_cluster.sh install"
  if healthy; then
    log "already running (node $NODE: $(node_state))"
    print_env
    return 0
  fi
  local t0=$SECONDS
  start_munge
  if ! pid_alive "$CTLD_PID" || ! pid_alive "$SLURMD_PID"; then
    # (re)start the slurm daemons from a fresh config
    stop_daemon slurmd "$SLURMD_PID"
    stop_daemon slurmctld "$CTLD_PID"
    write_conf
    log "starting slurmctld"
    # -c: clear old state (jobs) from a previous run; -i: ignore state-file errors
    slurmctld -f "$CONF" -c -i \
      || { dump_logs; die "slurmctld failed to start"; }
    log "starting slurmd"
    slurmd -f "$CONF" || { dump_logs; die "slurmd failed to start"; }
  fi
  local state=""
  while (( SECONDS - t0 < TIMEOUT )); do
    state="$(node_state)"
    node_ready "$state" && break
    case "$state" in
      down* | drain* | fail*)
        # e.g. left DOWN from an earlier unclean shutdown: ReturnToService=2 usually
        # handles this, but resume explicitly to be safe.
        scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
  done
  if ! node_ready "$state"; then
    dump_logs
    die "node $NODE not idle after ${TIMEOUT}s (state: '${state:-unknown}')"
  fi
  log "cluster up in $((SECONDS - t0))s (node $NODE: $state)"
  print_env
}

stop_daemon() {  # stop_daemon NAME PIDFILE
  local name="$1" pidfile="$2" pid i
  if ! pid_alive "$pidfile"; then
    rm -f "$pidfile"
    return 0
  fi
  pid="$(cat "$pidfile")"
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  # exited daemons may stay zombies until init reaps them: those count as gone
  for ((i = 0; i < 100; i++)); do
    proc_running "$pid" || break
    sleep 0.1
  done
  if proc_running "$pid"; then
    log "$name did not exit after 10s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.2
  fi
  rm -f "$pidfile"
}

cmd_stop() {
  stop_daemon slurmd "$SLURMD_PID"
  stop_daemon slurmctld "$CTLD_PID"
  stop_daemon munged "$MUNGE_PID"
  log "stopped"
}

cmd_status() {
  if pid_alive "$CTLD_PID" && [[ -f "$CONF" ]] && sinfo 2>/dev/null; then
    return 0
  fi
  echo "slurm cluster: not running (state dir $STATE_DIR)"
  return 1
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) print_env ;;
  *) echo "usage: $0 {install|start|stop|status|env}" >&2; exit 2 ;;
esac
