package platform

import (
	"context"
	"fmt"
	"github.com/infera-dev/infera/internal/clock"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/infera-dev/infera/internal/adminapi"
	"github.com/infera-dev/infera/internal/gpu"
	"github.com/infera-dev/infera/internal/placement"
	"github.com/infera-dev/infera/internal/supervisor"
)

// gpus is the machine's GPU inventory as up uses it: the devices placements are made on,
// the enforcer's env, and (with NVML) the wait for memory handed off to be really free.
type gpus struct {
	inv      gpu.Inventory
	devices  []placement.GPU
	enforcer placement.Enforcer
	released func(ctx context.Context, res []placement.Reservation) error // nil: declared

	mu        sync.Mutex
	used      map[string]int64 // replica -> GPU bytes its processes use (NVML)
	overTotal int              // times a replica went over its share
}

func openGPUs(cfg UpConfig, log *slog.Logger) (*gpus, error) {
	enf, err := placement.ParseEnforcer(cfg.GPUEnforcer)
	if err != nil {
		return nil, fmt.Errorf("up: --gpu-enforcer: %w", err)
	}
	inv, err := gpu.Open(cfg.GPUs, log.With("component", "gpu"))
	if err != nil {
		return nil, fmt.Errorf("up: %w", err)
	}
	devs, err := inv.Devices()
	if err != nil {
		inv.Close()
		return nil, fmt.Errorf("up: gpus: %w", err)
	}
	g := &gpus{inv: inv, enforcer: enf}
	for _, d := range devs {
		g.devices = append(g.devices, placement.GPU{Index: d.Index, UUID: d.UUID, Name: d.Name, MemoryBytes: d.MemoryTotal, Declared: d.Declared})
		if d.Declared {
			g.devices[len(g.devices)-1].UUID = "" // a declared device is named by its index
		}
	}
	if len(devs) > 0 {
		log.Info("gpus", "source", inv.Source(), "devices", len(devs))
	}
	if inv.Source() == gpu.SourceNVML {
		g.released = g.waitReleased
	}
	return g, nil
}

// indices are the GPUs' indices, for the pool that holds the whole machine.
func (g *gpus) indices() []int {
	out := make([]int, len(g.devices))
	for i, d := range g.devices {
		out[i] = d.Index
	}
	return out
}

// releasePoll and releaseWait: how often and how long a hand-off watches NVML for the
// memory the stopped replicas held to be given back by the driver.
const (
	releasePoll = 100 * time.Millisecond
	releaseWait = 30 * time.Second
)

// waitReleased returns once NVML shows each device's used memory at most its total less what
// was reserved there (what the stopped replicas held is back), or after releaseWait.
func (g *gpus) waitReleased(ctx context.Context, res []placement.Reservation) error {
	need := map[int]int64{}
	for _, r := range res {
		need[r.GPU] += r.MemoryBytes
	}
	deadline := time.Now().Add(releaseWait)
	for {
		devs, err := g.inv.Devices()
		if err != nil {
			return err
		}
		free := true
		for _, d := range devs {
			if n, ok := need[d.Index]; ok && d.MemoryTotal-d.MemoryUsed < n {
				free = false
			}
		}
		if free {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("gpu memory still in use after %s", releaseWait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(releasePoll):
		}
	}
}

// views is `infera get gpus`: every device with what is reserved on it, by whom, and (NVML
// only) what is used, in all and by each replica's processes.
func (g *gpus) views(sup *supervisor.Supervisor) []adminapi.GPUView {
	var measured map[int]int64
	if g.inv.Source() == gpu.SourceNVML {
		if devs, err := g.inv.Devices(); err == nil {
			measured = map[int]int64{}
			for _, d := range devs {
				measured[d.Index] = d.MemoryUsed
			}
		}
	}
	out := make([]adminapi.GPUView, 0, len(g.devices))
	byIndex := map[int]int{}
	for _, d := range g.devices {
		src := g.inv.Source()
		byIndex[d.Index] = len(out)
		out = append(out, adminapi.GPUView{Index: d.Index, UUID: d.UUID, Name: d.Name, Source: src, Total: d.MemoryBytes, Used: measured[d.Index]})
	}
	for _, r := range sup.GPUReservations() {
		i, ok := byIndex[r.GPU]
		if !ok {
			continue
		}
		out[i].Reserved += r.Bytes
		g.mu.Lock()
		used := g.used[r.Replica]
		g.mu.Unlock()
		out[i].Replicas = append(out[i].Replicas, adminapi.GPUReplicaView{Replica: r.Replica, Revision: string(r.Revision), Reserved: r.Bytes, Whole: r.Whole, Used: used})
	}
	return out
}

func (g *gpus) handler(sup *supervisor.Supervisor) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		adminapi.WriteJSON(w, http.StatusOK, g.views(sup))
	})
}

// collector exports the GPUs' reserved (and, with NVML, used) bytes and the hand-offs.
func (g *gpus) collector(sup *supervisor.Supervisor) prometheus.Collector {
	return &gpuCollector{g: g, sup: sup,
		reserved: prometheus.NewDesc("infera_gpu_memory_reserved_bytes", "GPU memory reserved by placements, per device.", []string{"gpu"}, nil),
		used:     prometheus.NewDesc("infera_gpu_memory_used_bytes", "GPU memory in use as NVML reads it, per device (NVML only).", []string{"gpu"}, nil),
		total:    prometheus.NewDesc("infera_gpu_memory_total_bytes", "GPU memory per device, measured (NVML) or declared (--gpus).", []string{"gpu", "source"}, nil),
		over:     prometheus.NewDesc("infera_gpu_share_exceeded_total", "Times a replica's processes used more GPU memory than it reserved (NVML only).", nil, nil),
		replica:  prometheus.NewDesc("infera_gpu_replica_memory_used_bytes", "GPU memory a replica's processes use, over its GPUs (NVML only).", []string{"replica"}, nil),
		handoffs: prometheus.NewDesc("infera_gpu_handoffs_total", "Ordered GPU hand-offs: idle replicas stopped so that a cold revision's replica could be placed.", nil, nil),
	}
}

type gpuCollector struct {
	g                                              *gpus
	sup                                            *supervisor.Supervisor
	reserved, used, total, handoffs, over, replica *prometheus.Desc
}

func (c *gpuCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.reserved
	ch <- c.used
	ch <- c.total
	ch <- c.handoffs
	ch <- c.over
	ch <- c.replica
}

func (c *gpuCollector) Collect(ch chan<- prometheus.Metric) {
	for _, v := range c.g.views(c.sup) {
		idx := fmt.Sprint(v.Index)
		ch <- prometheus.MustNewConstMetric(c.total, prometheus.GaugeValue, float64(v.Total), idx, v.Source)
		ch <- prometheus.MustNewConstMetric(c.reserved, prometheus.GaugeValue, float64(v.Reserved), idx)
		if v.Source == gpu.SourceNVML {
			ch <- prometheus.MustNewConstMetric(c.used, prometheus.GaugeValue, float64(v.Used), idx)
		}
	}
	_, total := c.sup.Handoffs()
	ch <- prometheus.MustNewConstMetric(c.handoffs, prometheus.CounterValue, float64(total))
	if c.g.inv.Source() == gpu.SourceNVML {
		c.g.mu.Lock()
		ch <- prometheus.MustNewConstMetric(c.over, prometheus.CounterValue, float64(c.g.overTotal))
		for r, n := range c.g.used {
			ch <- prometheus.MustNewConstMetric(c.replica, prometheus.GaugeValue, float64(n), r)
		}
		c.g.mu.Unlock()
	}
}

// accountEvery is how often replicas' real GPU memory is read (NVML) against what they
// reserved.
const accountEvery = 5 * time.Second

// usage is one look at the replicas' real GPU memory: bytes used by each replica's
// processes, and who is over its share.
type usage struct {
	used map[string]int64 // replica -> bytes its processes use, summed over devices
	over []supervisor.GPUHolder
}

// account sums NVML's per-process memory over each holder's processes and finds those over
// their reservation.
func account(procs []gpu.ProcessMemory, holders []supervisor.GPUHolder) usage {
	byPID := map[int]int64{}
	for _, p := range procs {
		byPID[p.PID] += p.Bytes
	}
	u := usage{used: map[string]int64{}}
	for _, h := range holders {
		var n int64
		for _, pid := range h.PIDs {
			n += byPID[pid]
		}
		u.used[h.Replica] = n
		if n > h.Reserved {
			u.over = append(u.over, h)
		}
	}
	return u
}

// runAccounting reads the replicas' real GPU memory every accountEvery (NVML only): kept for
// get gpus and the metrics, a warning when a replica goes over its share, and a restart for
// one whose revision says infera.dev/gpu-mem-enforce: kill.
func (g *gpus) runAccounting(ctx context.Context, clk clock.Clock, sup *supervisor.Supervisor, log *slog.Logger) error {
	if g.inv.Source() != gpu.SourceNVML {
		<-ctx.Done()
		return nil
	}
	t := clk.NewTicker(accountEvery)
	defer t.Stop()
	warned := map[string]bool{}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C():
		}
		procs, err := g.inv.ProcessMemory()
		if err != nil {
			log.Warn("gpu accounting", "error", err)
			continue
		}
		holders := sup.GPUHolders()
		u := account(procs, holders)
		g.mu.Lock()
		g.used = u.used
		g.mu.Unlock()
		over := map[string]bool{}
		for _, h := range u.over {
			over[h.Replica] = true
			msg := fmt.Sprintf("replica %s uses %s of GPU memory, over the %s it reserved", h.Replica, adminapi.Bytes(u.used[h.Replica]), adminapi.Bytes(h.Reserved))
			if !warned[h.Replica] {
				log.Warn(msg, "revision", string(h.Revision))
				g.mu.Lock()
				g.overTotal++
				g.mu.Unlock()
			}
			warned[h.Replica] = true
			if h.Enforce == "kill" {
				sup.RestartReplica(h.Replica, msg+" ("+supervisor.AnnotationGPUMemEnforce+": kill)")
			}
		}
		for r := range warned {
			if !over[r] {
				delete(warned, r)
			}
		}
	}
}
