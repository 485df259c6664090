package modelcache

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/infera-dev/infera/internal/eviction"
	"github.com/infera-dev/infera/internal/fluid"
)

func qty(s string) *resource.Quantity {
	q := resource.MustParse(s)
	return &q
}

func TestStoreFor(t *testing.T) {
	def := DefaultStore("/state/cache", 100<<30, 200<<30, 0)
	tests := []struct {
		name    string
		rt      *RuntimeSpec
		want    Store
		wantErr string
	}{
		{name: "no runtime: the default store", want: def},
		{name: "no levels: the default store", rt: &RuntimeSpec{Kind: fluid.KindAlluxioRuntime, Name: "x"}, want: def},
		{
			name: "Fluid's order, MEM's default path, default watermarks",
			rt: &RuntimeSpec{Kind: fluid.KindAlluxioRuntime, Name: "x", TieredStore: fluid.TieredStore{Levels: []fluid.Level{
				{MediumType: fluid.MediumHDD, Path: "/mnt/hdd", Quota: qty("100Gi")},
				{MediumType: fluid.MediumMemory, Quota: qty("2Gi"), High: "0.9", Low: "0.5"},
				{MediumType: fluid.MediumSSD, Path: "/mnt/ssd/", Quota: qty("10Gi")},
			}}},
			want: Store{Name: "runtime x", Levels: []Level{
				{Medium: fluid.MediumMemory, Dirs: []Dir{{"/dev/shm", 2 << 30}}, High: 0.9, Low: 0.5},
				{Medium: fluid.MediumSSD, Dirs: []Dir{{"/mnt/ssd", 10 << 30}}, High: DefaultHigh, Low: DefaultLow},
				{Medium: fluid.MediumHDD, Dirs: []Dir{{"/mnt/hdd", 100 << 30}}, High: DefaultHigh, Low: DefaultLow},
			}},
		},
		{
			name: "quota split equally over paths",
			rt: &RuntimeSpec{Kind: fluid.KindJuiceFSRuntime, Name: "x", TieredStore: fluid.TieredStore{Levels: []fluid.Level{
				{MediumType: fluid.MediumSSD, Path: "/a,/b,/c", Quota: qty("10")},
			}}},
			want: Store{Name: "runtime x", Levels: []Level{
				{Medium: fluid.MediumSSD, Dirs: []Dir{{"/a", 3}, {"/b", 3}, {"/c", 3}}, High: DefaultHigh, Low: DefaultLow},
			}},
		},
		{
			name: "quotaList overrides quota",
			rt: &RuntimeSpec{Kind: fluid.KindAlluxioRuntime, Name: "x", TieredStore: fluid.TieredStore{Levels: []fluid.Level{
				{MediumType: fluid.MediumSSD, Path: "/a,/b", Quota: qty("1Gi"), QuotaList: "100Gi, 50Gi"},
			}}},
			want: Store{Name: "runtime x", Levels: []Level{
				{Medium: fluid.MediumSSD, Dirs: []Dir{{"/a", 100 << 30}, {"/b", 50 << 30}}, High: DefaultHigh, Low: DefaultLow},
			}},
		},
		{
			name: "JindoRuntime uses levels[0] only",
			rt: &RuntimeSpec{Kind: fluid.KindJindoRuntime, Name: "x", TieredStore: fluid.TieredStore{Levels: []fluid.Level{
				{MediumType: fluid.MediumSSD, Path: "/a", Quota: qty("1Gi")},
				{MediumType: fluid.MediumMemory, Path: "/dev/shm", Quota: qty("1Gi")},
			}}},
			want: Store{Name: "runtime x", Levels: []Level{
				{Medium: fluid.MediumSSD, Dirs: []Dir{{"/a", 1 << 30}}, High: DefaultHigh, Low: DefaultLow},
			}},
		},
		{
			name: "every problem reported",
			rt: &RuntimeSpec{Kind: fluid.KindAlluxioRuntime, Name: "x", TieredStore: fluid.TieredStore{Levels: []fluid.Level{
				{MediumType: fluid.MediumSSD, Quota: qty("1Gi")},
				{MediumType: fluid.MediumHDD, Path: "/a,/b", QuotaList: "1Gi"},
				{MediumType: fluid.MediumMemory, Path: "relative", Quota: qty("1Gi")},
				{MediumType: fluid.MediumMemory, Path: "/m", Quota: qty("1Gi"), High: "0.5", Low: "0.7"},
				{MediumType: fluid.MediumMemory, Path: "/m"},
			}}},
			wantErr: "runtime x: tieredstore.levels[0]: SSD level has no path\n" +
				"runtime x: tieredstore.levels[1]: quotaList has 1 quotas for 2 paths\n" +
				"runtime x: tieredstore.levels[2]: cache path \"relative\" is not absolute\n" +
				"runtime x: tieredstore.levels[3]: low 0.7 is above high 0.5\n" +
				"runtime x: tieredstore.levels[4]: quota or quotaList is required",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := StoreFor(tt.rt, def)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("err:\n%v\nwant:\n%s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestDefaultStore(t *testing.T) {
	tests := []struct {
		free, total, cached, want int64
	}{
		{free: 100 << 30, total: 200 << 30, want: 90 << 30},                    // a 5% margin of 200 GiB
		{free: 100 << 30, total: 200 << 30, cached: 20 << 30, want: 110 << 30}, // what it holds is its own
		{free: 5 << 30, total: 10 << 30, want: 4 << 30},                        // at least 1 GiB
		{free: 512 << 20, total: 10 << 30, want: 0},
	}
	for _, tt := range tests {
		st := DefaultStore("/s/cache/", tt.free, tt.total, tt.cached)
		l := st.Levels[0]
		if l.Medium != fluid.MediumSSD || l.Dirs[0].Path != "/s/cache" || l.Dirs[0].Quota != tt.want || l.High != DefaultHigh || l.Low != DefaultLow {
			t.Errorf("DefaultStore(free %d, total %d, cached %d) = %+v, want quota %d", tt.free, tt.total, tt.cached, st, tt.want)
		}
	}
}

func TestPlace(t *testing.T) {
	at := func(min int) time.Time { return time.Date(2026, 1, 1, 0, min, 0, 0, time.UTC) }
	st := Store{Name: "runtime x", Levels: []Level{
		{Medium: fluid.MediumMemory, Dirs: []Dir{{"/mem", 100}}, High: 0.9, Low: 0.7},
		{Medium: fluid.MediumSSD, Dirs: []Dir{{"/ssd1", 1000}, {"/ssd2", 1000}}, High: 0.9, Low: 0.5},
	}}
	tests := []struct {
		name      string
		use       map[string]dirUse
		size      int64
		wantDir   string
		wantEvict []string
		wantErr   error
		wantMsg   string
	}{
		{name: "fits the fastest level", size: 80, wantDir: "/mem"},
		{name: "too big for MEM: SSD", size: 101, wantDir: "/ssd1"},
		{
			name: "the SSD directory with more room",
			use:  map[string]dirUse{"/ssd1": {Used: 500}, "/ssd2": {Used: 100}},
			size: 200, wantDir: "/ssd2",
		},
		{
			name: "MEM makes room by evicting its least recently used",
			use: map[string]dirUse{"/mem": {Used: 60, Entries: []eviction.Entry{
				{Key: "ns/new", Bytes: 30, LastUsed: at(2)}, {Key: "ns/old", Bytes: 30, LastUsed: at(1)},
			}}},
			size: 40, wantDir: "/mem", wantEvict: []string{"ns/old"},
		},
		{
			name: "MEM held by a pinned dataset: SSD",
			use: map[string]dirUse{"/mem": {Used: 70, Entries: []eviction.Entry{
				{Key: "ns/mounted", Bytes: 70, LastUsed: at(1), Pinned: true},
			}}},
			size: 40, wantDir: "/ssd1",
		},
		{
			name:    "larger than every quota",
			size:    3 << 30,
			wantErr: ErrTooLarge,
			wantMsg: "dataset ns/d needs 3 GiB; runtime x's largest level SSD holds 1000 B (quota per path)",
		},
		{
			name: "every directory held by pinned datasets",
			use: map[string]dirUse{
				"/mem":  {Used: 100, Entries: []eviction.Entry{{Key: "ns/a", Bytes: 100, Pinned: true}}},
				"/ssd1": {Used: 900, Entries: []eviction.Entry{{Key: "ns/b", Bytes: 900, Pinned: true}}},
				"/ssd2": {Used: 900, Entries: []eviction.Entry{{Key: "ns/c", Bytes: 900, Pinned: true}, {Key: "ns/z", Bytes: 0}}},
			},
			size:    200,
			wantErr: errNoRoom,
			wantMsg: "dataset ns/d needs 200 B; runtime x is full of datasets in use or being fetched (ns/a, ns/b, ns/c)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pl, err := place(st, tt.use, "ns/d", tt.size)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || err.Error() != tt.wantMsg {
					t.Fatalf("err %v, want %v: %q", err, tt.wantErr, tt.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if pl.At.Path != tt.wantDir || !reflect.DeepEqual(pl.Evict, tt.wantEvict) {
				t.Errorf("placed in %s evicting %v, want %s evicting %v", pl.At.Path, pl.Evict, tt.wantDir, tt.wantEvict)
			}
		})
	}
	if _, err := place(Store{Name: "the default store"}, nil, "ns/d", 1); err == nil || !strings.Contains(err.Error(), "has no cache level") {
		t.Errorf("a store with no level: %v", err)
	}
}

func TestDiskUsage(t *testing.T) {
	dir := t.TempDir()
	if n, err := diskUsage(dir + "/missing"); n != 0 || err != nil {
		t.Errorf("missing dir: %d, %v", n, err)
	}
	writeFile(t, dir+"/a/b", 10000)
	n, err := diskUsage(dir)
	if err != nil {
		t.Fatal(err)
	}
	// Blocks, not sizes: 10,000 bytes take whole blocks, and the directories take theirs.
	if n < 10000 || n%512 != 0 {
		t.Errorf("diskUsage = %d, want whole 512-byte blocks covering 10000 bytes", n)
	}
}
