package main

// The live check: a running Hallmark server followed as a tlog-tiles client would, over HTTPS.
// Two consecutive checkpoints are opened with note.Open, the new one checked to extend the old
// with tlog.CheckTree (proof built by Go from tiles fetched over HTTP through TileHashReader),
// and leaves from the entry bundles proven with ProveRecord and checked with CheckRecord, since
// x/mod 0.7.0's TileHashReader alone may return a tile it never checked against the root.

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type liveInput struct {
	URL           string `json:"url"`
	CA            string `json:"ca"`
	VerifierKey   string `json:"verifierKey"`
	OldCheckpoint string `json:"oldCheckpoint"`
}

type httpTiles struct {
	client *http.Client
	base   string
}

func (h httpTiles) get(path string) ([]byte, error) {
	resp, err := h.client.Get(h.base + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	return b, nil
}

func (h httpTiles) Height() int                     { return 8 }
func (h httpTiles) SaveTiles([]tlog.Tile, [][]byte) {}
func (h httpTiles) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	data := make([][]byte, len(tiles))
	for i, t := range tiles {
		b, err := h.get("/log/tile/" + strings.TrimPrefix(t.Path(), "tile/8/"))
		if err != nil {
			return nil, err
		}
		data[i] = b
	}
	return data, nil
}

// pinnedClient trusts the given CA alone; the server's name is not checked (the test talks to
// 127.0.0.1 on a random port, and its certificate names the server's SPIFFE ID).
func pinnedClient(caPEM string) *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(caPEM))
	cfg := &tls.Config{
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			certs := make([]*x509.Certificate, len(raw))
			for i, r := range raw {
				c, err := x509.ParseCertificate(r)
				if err != nil {
					return err
				}
				certs[i] = c
			}
			inter := x509.NewCertPool()
			for _, c := range certs[1:] {
				inter.AddCert(c)
			}
			_, err := certs[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter})
			return err
		},
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
}

func entryBundle(b []byte) [][]byte {
	var out [][]byte
	for len(b) >= 2 {
		n := int(b[0])<<8 | int(b[1])
		out = append(out, b[2:2+n])
		b = b[2+n:]
	}
	return out
}

func checkLive(in liveInput) {
	h := httpTiles{client: pinnedClient(in.CA), base: in.URL}
	v, err := note.NewVerifier(in.VerifierKey)
	if err != nil {
		fail("live: note.NewVerifier: %v", err)
		return
	}
	open := func(signed []byte) (tlog.Tree, bool) {
		n, err := note.Open(signed, note.VerifierList(v))
		if err != nil {
			fail("live: note.Open: %v", err)
			return tlog.Tree{}, false
		}
		// Origin line first (tlog.ParseTree reads the older go.sum database form without one).
		lines := strings.SplitN(n.Text, "\n", 2)
		if lines[0] != v.Name() {
			fail("live: origin %q is not the key name %q", lines[0], v.Name())
			return tlog.Tree{}, false
		}
		t, err := tlog.ParseTree([]byte("go.sum database tree\n" + lines[1]))
		if err != nil {
			fail("live: ParseTree: %v", err)
			return tlog.Tree{}, false
		}
		out.Checked["liveCheckpointOpened"]++
		return t, true
	}
	old, ok := open([]byte(in.OldCheckpoint))
	if !ok {
		return
	}
	latest, err := h.get("/log/checkpoint")
	if err != nil {
		fail("live: %v", err)
		return
	}
	tree, ok := open(latest)
	if !ok {
		return
	}
	r := tlog.TileHashReader(tree, h)
	if old.N > 0 && old.N <= tree.N {
		p, err := tlog.ProveTree(tree.N, old.N, r)
		if err == nil {
			err = tlog.CheckTree(p, tree.N, tree.Hash, old.N, old.Hash)
		}
		if err != nil {
			fail("live: checkpoint %d does not extend %d: %v", tree.N, old.N, err)
		} else {
			out.Checked["liveConsistency"]++
		}
	}
	for start := int64(0); start < tree.N; start += 256 {
		width := tree.N - start
		path := fmt.Sprintf("/log/tile/entries/%s", strings.TrimPrefix(tlog.Tile{H: 8, L: 0, N: start / 256, W: 256}.Path(), "tile/8/0/"))
		if width < 256 {
			path = fmt.Sprintf("/log/tile/entries/%s", strings.TrimPrefix(tlog.Tile{H: 8, L: 0, N: start / 256, W: int(width)}.Path(), "tile/8/0/"))
		}
		b, err := h.get(path)
		if err != nil {
			fail("live: %v", err)
			return
		}
		for i, e := range entryBundle(b) {
			index := start + int64(i)
			p, err := tlog.ProveRecord(tree.N, index, r)
			if err == nil {
				err = tlog.CheckRecord(p, tree.N, tree.Hash, index, tlog.RecordHash(e))
			}
			if err != nil {
				fail("live: leaf %d: %v", index, err)
			} else {
				out.Checked["liveInclusion"]++
			}
		}
	}
}
