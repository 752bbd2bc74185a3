package main

// Receipts: C2SP tlog-proof text as Hallmark writes it beside an SVID, checked as an offline
// verifier that shares no code with Hallmark would: note.Open with the log's key (witness
// cosignatures are unknown keys to it, so ignored), the checkpoint's size and root from the
// note text, and tlog.CheckRecord of SHA-256(0x00 || extra) at the index.

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type receiptInput struct {
	VerifierKey string `json:"verifierKey"`
	TlogProof   string `json:"tlogProof"`
	// Whether Hallmark says it verifies: a tampered receipt must fail here too.
	Valid bool `json:"valid"`
}

func checkReceipt(r receiptInput) error {
	lines := strings.Split(r.TlogProof, "\n")
	if len(lines) < 4 || lines[0] != "c2sp.org/tlog-proof@v1" || !strings.HasPrefix(lines[1], "extra ") || !strings.HasPrefix(lines[2], "index ") {
		return fmt.Errorf("not a tlog-proof with extra and index lines")
	}
	entry, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(lines[1], "extra "))
	if err != nil {
		return err
	}
	index, err := strconv.ParseInt(strings.TrimPrefix(lines[2], "index "), 10, 64)
	if err != nil {
		return err
	}
	var proof tlog.RecordProof
	i := 3
	for ; i < len(lines) && lines[i] != ""; i++ {
		h, err := tlog.ParseHash(lines[i])
		if err != nil {
			return err
		}
		proof = append(proof, h)
	}
	if i >= len(lines) {
		return fmt.Errorf("no blank line before the checkpoint")
	}
	v, err := note.NewVerifier(r.VerifierKey)
	if err != nil {
		return err
	}
	n, err := note.Open([]byte(strings.Join(lines[i+1:], "\n")), note.VerifierList(v))
	if err != nil {
		return err
	}
	cp := strings.Split(n.Text, "\n")
	if len(cp) < 4 || cp[0] != v.Name() {
		return fmt.Errorf("the checkpoint's origin is not the key's name")
	}
	size, err := strconv.ParseInt(cp[1], 10, 64)
	if err != nil {
		return err
	}
	root, err := tlog.ParseHash(cp[2])
	if err != nil {
		return err
	}
	return tlog.CheckRecord(proof, size, root, index, tlog.RecordHash(entry))
}

func checkReceipts(rs []receiptInput) {
	for i, r := range rs {
		err := checkReceipt(r)
		switch {
		case r.Valid && err != nil:
			fail("receipt %d: Hallmark verifies it, Go refuses it: %v", i, err)
		case !r.Valid && err == nil:
			fail("receipt %d: Hallmark refuses it, Go accepts it", i)
		case r.Valid:
			out.Checked["receipt"]++
		default:
			out.Checked["receiptRefused"]++
		}
	}
}
