package sim

import (
	"maps"
	"slices"
	"time"
)

// Eventual consistency: every change to a volume, instance or snapshot is
// recorded (at save time, which every mutation goes through) as the state
// it replaced, kept for ConsistencyLag. A Describe call picks an age in
// [0, ConsistencyLag] and answers from the world as it was then: a new
// resource is NotFound, a fresh attachment missing, a terminated owner
// still running with its volume attached. Actions that change things
// always see the truth, as on EC2.

// past is one superseded state of a resource: what it was until until.
// v nil: the resource did not exist yet.
type past[T any] struct {
	until time.Time
	v     *T
}

// versions tracks one kind of resource.
type versions[T any] struct {
	cur  map[string]*T // the last recorded copy of each resource
	hist map[string][]past[T]
}

func (vs *versions[T]) record(now time.Time, lag time.Duration, live map[string]*T,
	clone func(*T) T, equal func(a, b *T) bool, backdate bool) {
	if vs.cur == nil {
		vs.cur, vs.hist = map[string]*T{}, map[string][]past[T]{}
		backdate = true // what exists at start has always existed
	}
	for id, v := range live {
		prev, ok := vs.cur[id]
		switch {
		case !ok:
			if !backdate {
				vs.hist[id] = append(vs.hist[id], past[T]{until: now})
			}
		case equal(prev, v):
			continue
		default:
			vs.hist[id] = append(vs.hist[id], past[T]{until: now, v: prev})
		}
		c := clone(v)
		vs.cur[id] = &c
	}
	for id, prev := range vs.cur {
		if _, ok := live[id]; !ok {
			vs.hist[id] = append(vs.hist[id], past[T]{until: now, v: prev})
			delete(vs.cur, id)
		}
	}
	cut := now.Add(-lag)
	for id, h := range vs.hist {
		k := 0
		for k < len(h) && h[k].until.Before(cut) {
			k++
		}
		if k == len(h) {
			delete(vs.hist, id)
		} else if k > 0 {
			vs.hist[id] = slices.Clone(h[k:])
		}
	}
}

// at returns the resources as they were at t: live where nothing changed
// since, else the recorded past state.
func (vs *versions[T]) at(t time.Time, live map[string]*T) (map[string]*T, bool) {
	if len(vs.hist) == 0 {
		return live, false
	}
	out := maps.Clone(live)
	stale := false
	for id, h := range vs.hist {
		for _, p := range h {
			if p.until.After(t) {
				if p.v == nil {
					delete(out, id)
				} else {
					out[id] = p.v
				}
				stale = true
				break
			}
		}
	}
	return out, stale
}

// worldHistory holds the recorded pasts of a world.
type worldHistory struct {
	volumes   versions[Volume]
	instances versions[Instance]
	snapshots versions[Snapshot]
}

// recordLocked notes what changed since the last save.
func (w *World) recordLocked() {
	lag := w.Hostile.ConsistencyLag
	if lag <= 0 {
		w.hist = nil
		return
	}
	if w.hist == nil {
		w.hist = &worldHistory{}
	}
	now := time.Now()
	back := w.backdate
	w.backdate = false
	w.hist.volumes.record(now, lag, w.Volumes, (*Volume).clone, volumeEqual, back)
	w.hist.instances.record(now, lag, w.Instances, (*Instance).clone, instanceEqual, back)
	w.hist.snapshots.record(now, lag, w.Snapshots, (*Snapshot).clone, snapshotEqual, back)
}

// view is what one Describe call sees.
type view struct {
	Volumes   map[string]*Volume
	Instances map[string]*Instance
	Snapshots map[string]*Snapshot
}

// viewLocked picks this call's age and returns the world as it was then.
func (w *World) viewLocked() view {
	v := view{w.Volumes, w.Instances, w.Snapshots}
	lag := w.Hostile.ConsistencyLag
	if lag <= 0 || w.hist == nil {
		return v
	}
	w.recordLocked() // changes not yet saved are part of the past too
	age := lag
	if !w.Hostile.ConsistencyOldest {
		age = time.Duration(w.rngLocked().Int64N(int64(lag) + 1))
	}
	t := time.Now().Add(-age)
	var s1, s2, s3 bool
	v.Volumes, s1 = w.hist.volumes.at(t, w.Volumes)
	v.Instances, s2 = w.hist.instances.at(t, w.Instances)
	v.Snapshots, s3 = w.hist.snapshots.at(t, w.Snapshots)
	if s1 || s2 || s3 {
		w.stats.StaleReads++
	}
	return v
}

func volumeEqual(a, b *Volume) bool {
	return a.State == b.State && a.AZ == b.AZ && a.Type == b.Type && a.SizeGiB == b.SizeGiB &&
		a.Iops == b.Iops && a.Throughput == b.Throughput && a.MultiAttach == b.MultiAttach &&
		a.SnapshotID == b.SnapshotID && maps.Equal(a.Tags, b.Tags) && slices.Equal(a.Attachments, b.Attachments)
}

func instanceEqual(a, b *Instance) bool {
	return a.State == b.State && a.InstanceType == b.InstanceType && a.AZ == b.AZ &&
		maps.Equal(a.Tags, b.Tags) && maps.Equal(a.BlockDevices, b.BlockDevices)
}

func snapshotEqual(a, b *Snapshot) bool {
	return a.State == b.State && a.Progress == b.Progress && a.VolumeID == b.VolumeID && maps.Equal(a.Tags, b.Tags)
}

// backdatePendingLocked rewrites the recorded past of an instance that
// PendingFor just turned pending: on EC2 an instance is pending from launch
// until running, so no lagging view may show it running before that (the
// world held it as running only because "launch" stands for its first
// call). Without this, a client waiting for "running" after IncorrectState
// reads a stale "running" and retries AttachVolume in a tight loop.
func (w *World) backdatePendingLocked(id string) {
	if w.hist == nil {
		return
	}
	h := w.hist.instances.hist[id]
	for k, p := range h {
		if p.v != nil && p.v.State == InstanceRunning {
			c := p.v.clone()
			c.State = InstancePending
			h[k].v = &c
		}
	}
}
