package platform

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
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
		out[i].Replicas = append(out[i].Replicas, adminapi.GPUReplicaView{Replica: r.Replica, Revision: string(r.Revision), Reserved: r.Bytes, Whole: r.Whole})
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
		handoffs: prometheus.NewDesc("infera_gpu_handoffs_total", "Ordered GPU hand-offs: idle replicas stopped so that a cold revision's replica could be placed.", nil, nil),
	}
}

type gpuCollector struct {
	g                               *gpus
	sup                             *supervisor.Supervisor
	reserved, used, total, handoffs *prometheus.Desc
}

func (c *gpuCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.reserved
	ch <- c.used
	ch <- c.total
	ch <- c.handoffs
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
}
