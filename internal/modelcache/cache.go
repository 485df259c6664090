package modelcache

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/infera-dev/infera/internal/eviction"
	"github.com/infera-dev/infera/internal/fluid"
)

// The tiered store, and the Fluid semantics it keeps (Fluid's sources, at
// fluid-cloudnative/fluid a826600, are cited by path):
//
//   - Levels come from the runtime's spec.tieredstore.levels and are used fastest first, MEM,
//     SSD, HDD, whatever order the manifest lists them in (pkg/utils/tieredstore/tiered_store.go
//     sorts them by common.GetDefaultTieredStoreOrder). A JindoRuntime uses only levels[0]
//     (pkg/ddc/jindofsx/transform.go reads Levels[0] alone), so only that level is used here.
//   - path may list several directories, comma separated. quota is then split equally over them
//     (integer division, pkg/ddc/base/runtime.go: Quota.Value()/numPaths), and quotaList, when
//     set, gives each its own and overrides quota. Each directory is filled and evicted on its
//     own, as Alluxio does with a tier's dirs; a dataset lives entirely in one directory (a
//     replica mounts one directory), the one of its level with the most room.
//   - A MEM level with no path is /dev/shm, where Fluid puts memory tiers (the Jindo engine's
//     storagePath default, the Alluxio chart's values.yaml, the cache engine's
//     GetMemoryTieredStoreMountPath). An SSD or HDD level with no path is an error.
//   - A dataset's directory in a level is PATH/NAMESPACE/NAME, as the Alluxio engine lays out
//     its cache ("%s/%s/%s" of cachePath, namespace, name in pkg/ddc/alluxio/transform.go).
//   - Fluid binds one runtime to one dataset (of the same name), so there a quota is one
//     dataset's cache and eviction is of blocks within it. Here a directory is shared room: its
//     usage counts every dataset cached in it, whichever runtime placed it, and a runtime's
//     quota and watermarks bound that usage when its dataset is placed there. Datasets with no
//     runtime share the default store the same way; a dataset is evicted whole.
//   - high and low default to 0.95 and 0.7: Fluid passes neither to Alluxio
//     (charts/alluxio/templates/config/alluxio-conf.yaml sets only the dirs' path, medium and
//     quota), so Alluxio's own defaults apply (alluxio.worker.tieredstore.level0.watermark.
//     high.ratio 0.95, low.ratio 0.7 in Alluxio's PropertyKey.java), and Fluid's Alluxio chart
//     writes the same pair. JindoFSx uses 0.8 and 0.6 only when a runtime has no tieredstore at
//     all (pkg/ddc/jindofsx/transform.go) and otherwise passes the fields through, empty or not;
//     JuiceFS maps low to its free-space-ratio. infera applies 0.95/0.7 to every runtime's levels
//     (and to the default store) so that one manifest behaves the same whatever its engine.
//   - A runtime with no tieredstore levels, and a Dataset with no runtime, get the default
//     store (see DefaultStore). Fluid's engines would run a small MEM cache (JindoFSx: 1Gi of
//     /dev/shm) and read through it; infera cannot read through: a replica needs the whole
//     dataset on local disk, so it gets the room the state directory's filesystem has.
//
// Bytes are counted on disk (st_blocks × 512, as du does), never from object sizes, except the
// room reserved for a dataset being fetched: its size rounded up to whole 4 KiB blocks per file,
// or what is already on disk if more.
//
// fuse.cleanPolicy decides what deleting a dataset (or its runtime) removes. Fluid's policies
// say when the FUSE client pods go (api/v1alpha1/constant.go): OnDemand "once the fuse pod on
// some node is not needed", OnRuntimeDeleted (the default) "only when the cache runtime is
// deleted"; the cache workers, and the data they hold, go with the runtime either way. On one
// machine the cache is the worker and the served directory is the FUSE mount, so:
//   - OnRuntimeDeleted: deleting the dataset or its runtime removes its cached files, as soon as
//     no replica has the directory mounted (at once when none does).
//   - OnDemand: the files stay behind as an unowned cache entry, removed only when eviction
//     needs the room (least recently used first, like any unpinned dataset), and used again,
//     with no fetch, if the same dataset (same namespace, name and mounts) comes back.
//   - OnFuseChanged (JuiceFS only) is OnDemand here: there is no FUSE client to change.
//
// A runtime deleted while its dataset stays moves the dataset to the default store: what its
// levels held is removed and the dataset is fetched again there, whatever the policy (a cache
// entry belongs to one dataset, in one directory).
//
// Entries left in the index by a previous run that the first Set does not name are kept as
// unowned entries whatever their policy, because a restart must never throw a cache away.

// Watermarks applied when a level leaves high or low unset (see above).
const (
	DefaultHigh = 0.95
	DefaultLow  = 0.7
)

// memDefaultPath is where a MEM level with no path lives.
const memDefaultPath = "/dev/shm"

// Level is one tier of a store: a medium, its directories with their quotas, and its
// watermarks as ratios of each directory's quota.
type Level struct {
	Medium fluid.MediumType
	Dirs   []Dir
	High   float64
	Low    float64
}

// Dir is one directory of a level and its share of the level's quota, in bytes.
type Dir struct {
	Path  string
	Quota int64
}

// Store is where a dataset may be cached: its levels, fastest first.
type Store struct {
	// Name says whose store it is, for messages: "runtime x" or "the default store".
	Name   string
	Levels []Level
}

// mediumOrder is Fluid's tier order: MEM, SSD, HDD.
func mediumOrder(m fluid.MediumType) int {
	switch m {
	case fluid.MediumMemory:
		return 0
	case fluid.MediumSSD:
		return 1
	case fluid.MediumHDD:
		return 2
	}
	return 3
}

// StoreFor returns the store of a runtime: its tieredstore levels in Fluid's order, with Fluid's
// defaults, or def when rt is nil or has no levels. It reports every problem in the levels.
func StoreFor(rt *RuntimeSpec, def Store) (Store, error) {
	if rt == nil || len(rt.TieredStore.Levels) == 0 {
		return def, nil
	}
	levels := rt.TieredStore.Levels
	if rt.Kind == fluid.KindJindoRuntime {
		levels = levels[:1]
	}
	st := Store{Name: "runtime " + rt.Name}
	var errs []error
	for i := range levels {
		l, err := resolveLevel(&levels[i])
		if err != nil {
			errs = append(errs, fmt.Errorf("runtime %s: tieredstore.levels[%d]: %w", rt.Name, i, err))
			continue
		}
		st.Levels = append(st.Levels, l)
	}
	slices.SortStableFunc(st.Levels, func(a, b Level) int { return mediumOrder(a.Medium) - mediumOrder(b.Medium) })
	return st, errors.Join(errs...)
}

func resolveLevel(l *fluid.Level) (Level, error) {
	out := Level{Medium: l.MediumType, High: DefaultHigh, Low: DefaultLow}
	path := l.Path
	if path == "" {
		if l.MediumType != fluid.MediumMemory {
			return out, fmt.Errorf("%s level has no path", l.MediumType)
		}
		path = memDefaultPath
	}
	paths := strings.Split(path, ",")
	var quotas []int64
	switch {
	case l.QuotaList != "":
		for _, q := range strings.Split(l.QuotaList, ",") {
			qty, err := resource.ParseQuantity(strings.TrimSpace(q))
			if err != nil {
				return out, fmt.Errorf("quotaList: %q: %w", q, err)
			}
			quotas = append(quotas, qty.Value())
		}
		if len(quotas) != len(paths) {
			return out, fmt.Errorf("quotaList has %d quotas for %d paths", len(quotas), len(paths))
		}
	case l.Quota != nil:
		each := l.Quota.Value() / int64(len(paths))
		for range paths {
			quotas = append(quotas, each)
		}
	default:
		return out, errors.New("quota or quotaList is required")
	}
	for i, p := range paths {
		p = strings.TrimRight(strings.TrimSpace(p), "/")
		if !filepath.IsAbs(p) {
			return out, fmt.Errorf("cache path %q is not absolute", paths[i])
		}
		out.Dirs = append(out.Dirs, Dir{Path: filepath.Clean(p), Quota: quotas[i]})
	}
	var err error
	if out.High, err = ratio(l.High, DefaultHigh); err != nil {
		return out, fmt.Errorf("high: %w", err)
	}
	if out.Low, err = ratio(l.Low, DefaultLow); err != nil {
		return out, fmt.Errorf("low: %w", err)
	}
	if out.Low > out.High {
		return out, fmt.Errorf("low %s is above high %s", l.Low, l.High)
	}
	return out, nil
}

func ratio(s string, def float64) (float64, error) {
	if s == "" {
		return def, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || !(f >= 0 && f <= 1) {
		return 0, fmt.Errorf("%q is not a ratio between 0 and 1", s)
	}
	return f, nil
}

// DefaultStore is the store of a Dataset with no runtime (or a runtime with no levels): one SSD
// level at dir, whose quota is the free space of its filesystem when infera starts, plus what the
// cache already holds there, less a margin of 5% of the filesystem (at least 1 GiB) left for
// everything else; the watermarks are Fluid's defaults.
func DefaultStore(dir string, free, total, cached int64) Store {
	margin := max(total/20, 1<<30)
	return Store{
		Name: "the default store",
		Levels: []Level{{
			Medium: fluid.MediumSSD,
			Dirs:   []Dir{{Path: filepath.Clean(dir), Quota: max(free+cached-margin, 0)}},
			High:   DefaultHigh,
			Low:    DefaultLow,
		}},
	}
}

// dirs lists every directory of the store with its level.
func (s Store) dirs() []levelDir {
	var out []levelDir
	for i := range s.Levels {
		for _, d := range s.Levels[i].Dirs {
			out = append(out, levelDir{Level: &s.Levels[i], Dir: d})
		}
	}
	return out
}

// find returns the level directory at path, if the store has it.
func (s Store) find(path string) (levelDir, bool) {
	for _, ld := range s.dirs() {
		if ld.Path == path {
			return ld, true
		}
	}
	return levelDir{}, false
}

type levelDir struct {
	*Level
	Dir
}

// dirUse is what a level directory holds now: the bytes its datasets use (counting
// reservations) and the datasets, for eviction.
type dirUse struct {
	Used    int64
	Entries []eviction.Entry
}

// placement is where a dataset goes and what must be evicted first to make room.
type placement struct {
	At    levelDir
	Evict []string
}

// errNoRoom is placement's failure when only pinned datasets keep a dataset out: it waits for
// a replica to let go of one, then tries again.
var errNoRoom = errors.New("no room")

// reasonError is a message that matches a sentinel without spelling it out.
type reasonError struct {
	msg    string
	reason error
}

func (e *reasonError) Error() string { return e.msg }
func (e *reasonError) Unwrap() error { return e.reason }

func reasonf(reason error, format string, args ...any) error {
	return &reasonError{msg: fmt.Sprintf(format, args...), reason: reason}
}

// place picks the directory for a dataset of size bytes: the first level, in Fluid's order,
// with a directory whose quota can hold it whole, taking the directory with the most room, and
// the least-recently-used unpinned datasets there to evict when the dataset would take it past
// its high watermark. A dataset no directory's quota can hold fails with ErrTooLarge; one that
// only pinned datasets keep out fails with errNoRoom.
func place(st Store, use map[string]dirUse, key string, size int64) (placement, error) {
	var biggest levelDir
	for i := range st.Levels {
		l := &st.Levels[i]
		dirs := slices.Clone(l.Dirs)
		slices.SortStableFunc(dirs, func(a, b Dir) int {
			fa, fb := a.Quota-use[a.Path].Used, b.Quota-use[b.Path].Used
			return int(sign(fb - fa))
		})
		for _, d := range dirs {
			if biggest.Level == nil || d.Quota > biggest.Quota {
				biggest = levelDir{Level: l, Dir: d}
			}
			if size > d.Quota {
				continue
			}
			u := use[d.Path]
			res := eviction.Plan(eviction.Usage{Quota: d.Quota, Used: u.Used + size}, u.Entries, l.High, l.Low)
			if res.Used <= d.Quota {
				return placement{At: levelDir{Level: l, Dir: d}, Evict: res.Evict}, nil
			}
		}
	}
	if biggest.Level == nil {
		return placement{}, reasonf(ErrTooLarge, "dataset %s needs %s; %s has no cache level", key, formatBytes(size), st.Name)
	}
	if size > biggest.Quota {
		per := "quota"
		if len(biggest.Level.Dirs) > 1 {
			per = "quota per path"
		}
		return placement{}, reasonf(ErrTooLarge, "dataset %s needs %s; %s's largest level %s holds %s (%s)",
			key, formatBytes(size), st.Name, biggest.Medium, formatBytes(biggest.Quota), per)
	}
	var held []string
	for _, ld := range st.dirs() {
		for _, e := range use[ld.Path].Entries {
			if e.Pinned {
				held = append(held, e.Key)
			}
		}
	}
	slices.Sort(held)
	return placement{}, reasonf(errNoRoom, "dataset %s needs %s; %s is full of datasets in use or being fetched (%s)",
		key, formatBytes(size), st.Name, strings.Join(slices.Compact(held), ", "))
}

func sign(n int64) int64 {
	switch {
	case n < 0:
		return -1
	case n > 0:
		return 1
	}
	return 0
}

// reserve is the room a dataset being fetched is given: each file rounded up to whole 4 KiB
// blocks.
func reserve(files []indexedFile) int64 {
	var n int64
	for _, f := range files {
		n += (f.Object.Size + 4095) &^ 4095
	}
	return n
}

// diskUsage is the bytes on disk of everything under dir (st_blocks × 512); 0 when dir is
// missing.
func diskUsage(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		fi, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		n += blocksOf(fi)
		return nil
	})
	return n, err
}

// blocksOf is a file's bytes on disk; its size where the platform gives no block count.
func blocksOf(fi fs.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int64(st.Blocks) * 512
	}
	return fi.Size()
}

// statfsSpace is the default Config.DiskSpace: the filesystem's free bytes for an unprivileged
// user, and its size.
func statfsSpace(path string) (free, total int64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, 0, &os.PathError{Op: "statfs", Path: path, Err: err}
	}
	return int64(st.Bavail) * int64(st.Bsize), int64(st.Blocks) * int64(st.Bsize), nil
}
