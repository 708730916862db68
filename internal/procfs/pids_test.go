package procfs

// Tests of the readers of the process list, threads and descendants.

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestPIDs(t *testing.T) {
	got, err := fixtures.PIDs()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if diff := cmp.Diff([]int{90, 100, 101, 200}, got); diff != "" { // not "net"
		t.Errorf("PIDs (-want +got):\n%s", diff)
	}
	if _, err := FS("testdata/nope").PIDs(); err == nil {
		t.Error("PIDs of no directory: want an error")
	}
}

func TestTasks(t *testing.T) {
	got, err := waiting.Tasks(301)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]int{301, 311}, got); diff != "" {
		t.Errorf("Tasks(301) (-want +got):\n%s", diff)
	}
	if _, err := waiting.Tasks(399); err == nil {
		t.Error("Tasks of no process: want an error")
	}
}

func TestWithDescendants(t *testing.T) {
	tests := []struct {
		name string
		pids []int
		want []int
	}{
		{"launcher, master, worker", []int{90}, []int{90, 100, 101}},
		{"no children file", []int{200}, []int{200}},
		{"no such process", []int{999}, []int{999}},
		{"none", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := fixtures.WithDescendants(tt.pids)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("WithDescendants(%v) (-want +got):\n%s", tt.pids, diff)
			}
		})
	}
}
