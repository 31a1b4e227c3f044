#!/usr/bin/env python3
"""Produce -> consume latency of the tansu broker alone, under rtap-gen load
(no rtap host): `PYTHONPATH=~/.cache/rtap/perf-py python3 scripts/perf/broker-latency.py RATE [SECONDS]` (default 15 s).
Expects tansu at ~/.cache/rtap/tansu/tansu and rtap-gen in /var/tmp/rtap-target/release."""
import os, subprocess, sys, time
from confluent_kafka import Producer, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
B='127.0.0.1:19575'
t=subprocess.Popen([os.path.expanduser('~/.cache/rtap/tansu/tansu'),'broker','--listener-url','tcp://'+B,'--advertised-listener-url','tcp://'+B,'--storage-engine','memory://tansu/'],stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL)
time.sleep(1)
a=AdminClient({'bootstrap.servers':B})
[f.result() for f in a.create_topics([NewTopic('website-analytics-events',12,1),NewTopic('lat',1,1)]).values()]
g=subprocess.Popen([os.path.join(os.environ.get('CARGO_TARGET_DIR', '/var/tmp/rtap-target'), 'release', 'rtap-gen'),'--kafka-brokers',B,'--rate',sys.argv[1],'--events','0'],stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL)
# a consumer of the loaded topic (like the host) plus the latency topic
c=Consumer({'bootstrap.servers':B,'group.id':'x','fetch.min.bytes':131072,'fetch.wait.max.ms':10})
c.assign([TopicPartition('website-analytics-events',p,-1) for p in range(12)]+[TopicPartition('lat',0,-1)])
time.sleep(3)
p=Producer({'bootstrap.servers':B,'linger.ms':0})
DUR=float(sys.argv[2]) if len(sys.argv)>2 else 15.0
lat=[]; t0=time.time(); end=t0+DUR; nxt=time.time()
while time.time()<end:
    if time.time()>=nxt:
        p.produce('lat',str(time.time()).encode()); p.poll(0); nxt=time.time()+0.1
    m=c.poll(0.01)
    while m is not None:
        if not m.error() and m.topic()=='lat':
            lat.append(((time.time()-float(m.value()))*1000, time.time()-t0))
        m=c.poll(0)
        if time.time()>=nxt: break
def stats(xs):
    xs=sorted(xs)
    return 'n %d p50 %.1f p95 %.1f p99 %.1f max %.1f'%(len(xs),xs[len(xs)//2],xs[int(len(xs)*.95)],xs[min(len(xs)-1,int(len(xs)*.99))],xs[-1])
print('rate',sys.argv[1],stats([l for l,_ in lat]))
# The broker's latency grows with the topic (measured: P50 12 -> 117 ms
# within 60 s at 1 000 events/s), so show it per 10 s of the run.
for lo in range(0,int(DUR),10):
    xs=[l for l,t in lat if lo<=t<lo+10]
    if xs: print('  t %3d-%3d s'%(lo,lo+10),stats(xs))
