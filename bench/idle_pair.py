#!/usr/bin/env python3
"""Idle cost of metrics, measured alone: two release daemons side by side (10 registries, 10 targets,
watchdog on), one with metrics_file and one without, against the fake ECR on loopback; prints each
one's CPU a minute over the window, from /proc/PID/stat ticks (exited threads included) and from the
live threads' schedstat nanoseconds.
Usage (repo root, as root, after `cargo build --release -p ecr-refresherd` and `cargo build -p fake-aws`):
    python3 bench/idle_pair.py 240
The window starts 100 s after the start: the blocking threads of the first round retire after 90 s
(the runtime's keep-alive), so the live threads at both ends are the same ones.
"""
import os, subprocess, time, socket, sys, glob, tempfile
FAKE="target/debug/fake-aws"; BIN=os.path.abspath("target/release/ecr-refresherd")
WORK=tempfile.mkdtemp(prefix="ecr-idle-")
f=subprocess.Popen([FAKE,"--listen","127.0.0.1:0"],stdout=subprocess.PIPE,stderr=subprocess.DEVNULL)
ep=f.stdout.readline().decode().split()[1]
REG=["us-east-1","us-west-2","eu-west-1","eu-central-1","ap-south-1"]
def setup(name, metrics):
    d=os.path.join(WORK, name); os.makedirs(d,exist_ok=True)
    cfg=f'[daemon]\nstate_dir="{d}/state"\nsocket="{d}/ctl.sock"\n'
    if metrics: cfg+=f'metrics_file="{d}/textfile/ecr-refresherd.prom"\n'
    for i in range(10): cfg+=f'[[target]]\npath="{d}/t{i}/config.json"\n'
    for i in range(10): cfg+=f'[[registry]]\nhost="{100000000000+i}.dkr.ecr.{REG[i%5]}.amazonaws.com"\n'
    open(f"{d}/config.toml","w").write(cfg)
    ns=f"{d}/notify.sock"; s=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM); s.bind(ns)
    env={"PATH":"/usr/bin:/bin","HOME":d,"AWS_EC2_METADATA_DISABLED":"true","AWS_ACCESS_KEY_ID":"FAKEACCESSKEY","AWS_SECRET_ACCESS_KEY":"fake-secret-key-do-not-use","AWS_ENDPOINT_URL_ECR":ep,"NOTIFY_SOCKET":ns,"WATCHDOG_USEC":"60000000"}
    p=subprocess.Popen([BIN,"--config",f"{d}/config.toml","run"],env=env,stdout=subprocess.DEVNULL,stderr=open(f"{d}/log","w"))
    return p,s
def cgroup(pid, name):
    """A cgroup of its own: its CPU counter is exact and counts threads that exited (v1 cpuacct or v2)."""
    for base, counter in (("/sys/fs/cgroup/cpuacct", "cpuacct.usage"), ("/sys/fs/cgroup/unified", "cpu.stat"), ("/sys/fs/cgroup", "cpu.stat")):
        d = os.path.join(base, f"ecr-idle-{name}-{os.getpid()}")
        try:
            os.mkdir(d)
            open(os.path.join(d, "cgroup.procs"), "w").write(str(pid))
            return os.path.join(d, counter)
        except OSError:
            try: os.rmdir(d)
            except OSError: pass
    return None
def cg_ns(path):
    if path is None: return 0
    t = open(path).read()
    if path.endswith("cpu.stat"):
        return int(t.split("usage_usec")[1].split()[0]) * 1000
    return int(t)
def ticks(pid):
    st=open(f"/proc/{pid}/stat").read().rsplit(")",1)[1].split()
    return int(st[11])+int(st[12])
def ns(pid):
    t=0
    for f in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try: t+=int(open(f).read().split()[0])
        except: pass
    return t
a,sa=setup("a",True); b,sb=setup("b",False)
ca=cgroup(a.pid,"a"); cb=cgroup(b.pid,"b")
time.sleep(int(sys.argv[2]) if len(sys.argv) > 2 else 100)
W=int(sys.argv[1])
t0=(ticks(a.pid),ticks(b.pid),ns(a.pid),ns(b.pid),cg_ns(ca),cg_ns(cb))
time.sleep(W)
t1=(ticks(a.pid),ticks(b.pid),ns(a.pid),ns(b.pid),cg_ns(ca),cg_ns(cb))
per=60/W
print(f"window {W}s: metrics on: {(t1[0]-t0[0])*10*per:.1f} ms/min by ticks, {(t1[2]-t0[2])/1e6*per:.2f} ms/min live threads")
print(f"            metrics off: {(t1[1]-t0[1])*10*per:.1f} ms/min by ticks, {(t1[3]-t0[3])/1e6*per:.2f} ms/min live threads")
if ca and cb:
    print(f"cgroup ({os.path.basename(ca)}, exact, exited threads included): metrics on {(t1[4]-t0[4])/1e6*per:.2f} ms/min, off {(t1[5]-t0[5])/1e6*per:.2f} ms/min")
print("metrics file written:", os.path.exists(os.path.join(WORK, "a/textfile/ecr-refresherd.prom")))
for p in (a,b,f): p.kill()
for p in (a,b): p.wait()
for c in (ca,cb):
    if c:
        try: os.rmdir(os.path.dirname(c))
        except OSError: pass
