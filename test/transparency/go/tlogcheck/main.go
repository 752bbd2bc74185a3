// tlogcheck: an independent witness for Hallmark's transparency log. It reads what Hallmark's
// TypeScript produced (JSON on stdin) and checks it with Go's golang.org/x/mod/sumdb/tlog and
// sumdb/note, code Hallmark does not share. It prints one JSON object: how many checks of each
// kind passed, and every failure in words. Built with GO111MODULE=off GOPATH=/usr/share/gocode.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type input struct {
	Leaves     [][]byte `json:"leaves"`
	TreeHashes []struct {
		Size int64     `json:"size"`
		Hash tlog.Hash `json:"hash"`
	} `json:"treeHashes"`
	Inclusion []struct {
		Index int64       `json:"index"`
		Size  int64       `json:"size"`
		Proof []tlog.Hash `json:"proof"`
	} `json:"inclusion"`
	Consistency []struct {
		First  int64       `json:"first"`
		Second int64       `json:"second"`
		Proof  []tlog.Hash `json:"proof"`
	} `json:"consistency"`
	VerifierKey string `json:"verifierKey"`
	SignedNote  string `json:"signedNote"`
	NoteText    string `json:"noteText"`
	// Tiles written by Hallmark under TileDir (C2SP paths) for a tree of TileTreeSize leaves.
	TileDir      string    `json:"tileDir"`
	TileTreeSize int64     `json:"tileTreeSize"`
	TileRoot     tlog.Hash `json:"tileRoot"`
	// The same tiles with the level-0 hash of leaf TamperedIndex edited. The proof of that leaf
	// does not hold its own hash; the proof of its sibling does, and must fail.
	TamperedTileDir string `json:"tamperedTileDir"`
	TamperedIndex   int64  `json:"tamperedIndex"`
	// A running server to follow over HTTPS (live.go).
	Live *liveInput `json:"live"`
	// Receipts (tlog-proof text) to check offline (receipts.go).
	Receipts []receiptInput `json:"receipts"`
}

type output struct {
	Checked  map[string]int `json:"checked"`
	Failures []string       `json:"failures"`
}

var out = output{Checked: map[string]int{}, Failures: []string{}}

func fail(format string, args ...interface{}) {
	out.Failures = append(out.Failures, fmt.Sprintf(format, args...))
}

// hashStorage: Go's own stored hashes, built from the leaves with tlog.StoredHashes.
type hashStorage []tlog.Hash

func (s hashStorage) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	r := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x >= int64(len(s)) {
			return nil, fmt.Errorf("no stored hash %d", x)
		}
		r[i] = s[x]
	}
	return r, nil
}

// dirTiles reads tiles from Hallmark's C2SP layout: tile/<L>/<N>[.p/<W>]. Go's own Tile.Path()
// is the older tile/<H>/<L>/<N>[.p/<W>]; dropping the height element gives the C2SP path, so
// Hallmark's encoding of N is checked against Go's.
type dirTiles struct{ dir string }

func (d dirTiles) Height() int                     { return 8 }
func (d dirTiles) SaveTiles([]tlog.Tile, [][]byte) {}
func (d dirTiles) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	data := make([][]byte, len(tiles))
	for i, t := range tiles {
		p := "tile/" + strings.TrimPrefix(t.Path(), "tile/8/")
		b, err := os.ReadFile(filepath.Join(d.dir, p))
		if err != nil {
			return nil, err
		}
		data[i] = b
	}
	return data, nil
}

func main() {
	var in input
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var storage hashStorage
	for i, leaf := range in.Leaves {
		hs, err := tlog.StoredHashes(int64(i), leaf, storage)
		if err != nil {
			fail("StoredHashes(%d): %v", i, err)
			break
		}
		storage = append(storage, hs...)
	}
	goTreeHash := func(n int64) tlog.Hash {
		h, err := tlog.TreeHash(n, storage)
		if err != nil {
			fail("TreeHash(%d): %v", n, err)
		}
		return h
	}

	for _, th := range in.TreeHashes {
		if g := goTreeHash(th.Size); g != th.Hash {
			fail("tree hash at size %d: ours %v, tlog.TreeHash %v", th.Size, th.Hash, g)
		} else {
			out.Checked["treeHash"]++
		}
	}
	for _, p := range in.Inclusion {
		err := tlog.CheckRecord(p.Proof, p.Size, goTreeHash(p.Size), p.Index, tlog.RecordHash(in.Leaves[p.Index]))
		if err != nil {
			fail("inclusion of %d in %d: %v", p.Index, p.Size, err)
		} else {
			out.Checked["inclusion"]++
		}
	}
	for _, p := range in.Consistency {
		err := tlog.CheckTree(p.Proof, p.Second, goTreeHash(p.Second), p.First, goTreeHash(p.First))
		if err != nil {
			fail("consistency %d -> %d: %v", p.First, p.Second, err)
		} else {
			out.Checked["consistency"]++
		}
	}

	if in.VerifierKey != "" {
		v, err := note.NewVerifier(in.VerifierKey)
		if err != nil {
			fail("note.NewVerifier(%q): %v", in.VerifierKey, err)
		} else if n, err := note.Open([]byte(in.SignedNote), note.VerifierList(v)); err != nil {
			fail("note.Open: %v", err)
		} else if n.Text != in.NoteText || len(n.Sigs) != 1 {
			fail("note.Open returned text %q with %d signatures", n.Text, len(n.Sigs))
		} else {
			out.Checked["note"]++
		}
	}

	if in.TileDir != "" {
		tree := tlog.Tree{N: in.TileTreeSize, Hash: in.TileRoot}
		if g := goTreeHash(tree.N); g != tree.Hash {
			fail("tile tree root: ours %v, tlog.TreeHash %v", tree.Hash, g)
		}
		r := tlog.TileHashReader(tree, dirTiles{in.TileDir})
		if h, err := tlog.TreeHash(tree.N, r); err != nil || h != tree.Hash {
			fail("TreeHash through TileHashReader: %v %v", h, err)
		} else {
			out.Checked["tileTreeHash"]++
		}
		// x/mod 0.7.0's TileHashReader can hand back a tile it never checked against the root,
		// so every proof built from the tiles is checked on its own with CheckRecord/CheckTree.
		for i := int64(0); i < tree.N; i += 997 {
			p, err := tlog.ProveRecord(tree.N, i, r)
			if err != nil {
				fail("ProveRecord(%d) from tiles: %v", i, err)
			} else if err := tlog.CheckRecord(p, tree.N, tree.Hash, i, tlog.RecordHash(in.Leaves[i])); err != nil {
				fail("CheckRecord(%d) of a proof from tiles: %v", i, err)
			} else {
				out.Checked["tileInclusion"]++
			}
		}
		for m := int64(1); m < tree.N; m = m*3 + 1 {
			p, err := tlog.ProveTree(tree.N, m, r)
			if err != nil {
				fail("ProveTree(%d) from tiles: %v", m, err)
			} else if err := tlog.CheckTree(p, tree.N, tree.Hash, m, goTreeHash(m)); err != nil {
				fail("CheckTree(%d) of a proof from tiles: %v", m, err)
			} else {
				out.Checked["tileConsistency"]++
			}
		}
	}

	if in.TamperedTileDir != "" {
		tree := tlog.Tree{N: in.TileTreeSize, Hash: in.TileRoot}
		r := tlog.TileHashReader(tree, dirTiles{in.TamperedTileDir})
		i := in.TamperedIndex ^ 1
		p, err := tlog.ProveRecord(tree.N, i, r)
		if err == nil {
			err = tlog.CheckRecord(p, tree.N, tree.Hash, i, tlog.RecordHash(in.Leaves[i]))
		}
		if err == nil {
			fail("a proof for leaf %d built from an edited tile passed", i)
		} else {
			out.Checked["tamperedTileRefused"]++
		}
	}

	if in.Live != nil {
		checkLive(*in.Live)
	}
	checkReceipts(in.Receipts)

	json.NewEncoder(os.Stdout).Encode(out)
}
