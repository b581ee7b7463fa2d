package kmod

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
)

// trie is one of depmod's binary indexes (modules.alias.bin,
// modules.dep.bin, modules.builtin.bin): what modprobe reads first, and
// what lets a boot look up a handful of keys instead of parsing every line
// of the text files (tens of ms for a distribution kernel on a slow CPU).
//
// The format is libkmod's (libkmod-index.c): big-endian magic 0xB007F457,
// version 2.x, the root's node offset; a node offset carries flags in its
// high nibble and the file offset below. A node is an optional
// NUL-terminated prefix (the Patricia trie's merged label), optional
// children (first byte, last byte, one offset per byte in between, 0 for
// none) and optional values (count, then per value a priority and a
// NUL-terminated string). Keys are module names (dep, builtin) or alias
// patterns with '-' written '_' (alias); an alias's values are module
// names, its priority the module's place in depmod's order.
type trie struct {
	name string // file name, for errors
	b    []byte
	root uint32
}

const (
	trieMagic      = 0xB007F457
	trieMajor      = 2
	trieHasPrefix  = 0x80000000
	trieHasValues  = 0x40000000
	trieHasKids    = 0x20000000
	trieOffsetMask = 0x0FFFFFFF
	// trieMaxDepth bounds the walk below a wildcard in a damaged file
	// whose offsets loop (a walk along a key ends with the key): depmod's
	// keys are module names and aliases, a few hundred bytes.
	trieMaxDepth = 4096
)

var errTrie = errors.New("damaged index")

func openTrie(path string) (*trie, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(b) < 12 || binary.BigEndian.Uint32(b) != trieMagic || binary.BigEndian.Uint32(b[4:])>>16 != trieMajor {
		return nil, fmt.Errorf("%s: not a depmod binary index (version 2)", path)
	}
	t := &trie{name: path, b: b, root: binary.BigEndian.Uint32(b[8:])}
	if _, err := t.node(t.root); err != nil {
		return nil, err
	}
	return t, nil
}

type trieNode struct {
	prefix      string
	first, last byte
	kids        []byte // (last-first+1) big-endian offsets
	values      []byte // count, then the values
}

func (t *trie) node(off uint32) (trieNode, error) {
	var n trieNode
	p := int(off & trieOffsetMask)
	if p == 0 || p >= len(t.b) {
		return n, fmt.Errorf("%s: node offset %#x: %w", t.name, off, errTrie)
	}
	if off&trieHasPrefix != 0 {
		end := bytes.IndexByte(t.b[p:], 0)
		if end < 0 {
			return n, fmt.Errorf("%s: prefix at %#x: %w", t.name, p, errTrie)
		}
		n.prefix, p = string(t.b[p:p+end]), p+end+1
	}
	if off&trieHasKids != 0 {
		if p+2 > len(t.b) || t.b[p] > t.b[p+1] {
			return n, fmt.Errorf("%s: children at %#x: %w", t.name, p, errTrie)
		}
		n.first, n.last = t.b[p], t.b[p+1]
		end := p + 2 + 4*(int(n.last)-int(n.first)+1)
		if end > len(t.b) {
			return n, fmt.Errorf("%s: children at %#x: %w", t.name, p, errTrie)
		}
		n.kids, p = t.b[p+2:end], end
	}
	if off&trieHasValues != 0 {
		if p+4 > len(t.b) {
			return n, fmt.Errorf("%s: values at %#x: %w", t.name, p, errTrie)
		}
		n.values = t.b[p:]
	}
	return n, nil
}

// child returns the offset of the child labelled c, 0 if none (an offset
// whose position bits are 0 is none, whatever its flags).
func (n *trieNode) child(c byte) uint32 {
	if n.kids == nil || c < n.first || c > n.last {
		return 0
	}
	if off := binary.BigEndian.Uint32(n.kids[4*int(c-n.first):]); off&trieOffsetMask != 0 {
		return off
	}
	return 0
}

// eachValue calls fn for the node's values in file order.
func (t *trie) eachValue(n *trieNode, fn func(prio uint32, v string)) error {
	if n.values == nil {
		return nil
	}
	count := binary.BigEndian.Uint32(n.values)
	b := n.values[4:]
	for ; count > 0; count-- {
		if len(b) < 4 {
			return fmt.Errorf("%s: value: %w", t.name, errTrie)
		}
		prio := binary.BigEndian.Uint32(b)
		end := bytes.IndexByte(b[4:], 0)
		if end < 0 {
			return fmt.Errorf("%s: value: %w", t.name, errTrie)
		}
		fn(prio, string(b[4:4+end]))
		b = b[4+end+1:]
	}
	return nil
}

// get returns the value of the lowest priority stored under key. Every
// step takes at least one byte of key, so a loop in the file ends with it.
func (t *trie) get(key string) (value string, ok bool, err error) {
	off := t.root
	for {
		n, err := t.node(off)
		if err != nil {
			return "", false, err
		}
		if !strings.HasPrefix(key, n.prefix) {
			return "", false, nil
		}
		key = key[len(n.prefix):]
		if key == "" {
			best := uint32(0)
			err := t.eachValue(&n, func(prio uint32, v string) {
				if !ok || prio < best {
					value, ok, best = v, true, prio
				}
			})
			return value, ok, err
		}
		if off = n.child(key[0]); off == 0 {
			return "", false, nil
		}
		key = key[1:]
	}
}

// match calls fn for the values of every stored pattern that matches key
// (fnmatch without flags, as modprobe): it follows key's bytes down the
// trie and, wherever a pattern's next byte is a wildcard ('*', '?', '['),
// tries every pattern of that subtree against the rest of key. As in get,
// every step down takes a byte of key.
func (t *trie) match(key string, fn func(prio uint32, module string)) error {
	off, i := t.root, 0
	for {
		n, err := t.node(off)
		if err != nil {
			return err
		}
		for j := 0; j < len(n.prefix); j++ {
			if c := n.prefix[j]; c == '*' || c == '?' || c == '[' {
				return t.matchAll(&n, n.prefix[j:], key[i+j:], 0, fn)
			}
			if i+j >= len(key) || n.prefix[j] != key[i+j] {
				return nil
			}
		}
		i += len(n.prefix)
		for _, wc := range [...]byte{'*', '?', '['} {
			if c := n.child(wc); c != 0 {
				cn, err := t.node(c)
				if err != nil {
					return err
				}
				if err := t.matchAll(&cn, string(wc)+cn.prefix, key[i:], 0, fn); err != nil {
					return err
				}
			}
		}
		if i == len(key) {
			return t.eachValue(&n, fn)
		}
		if off = n.child(key[i]); off == 0 {
			return nil
		}
		i++
	}
}

// matchAll tries every pattern below n, whose text so far is pattern,
// against rest; depth counts the nodes below the wildcard.
func (t *trie) matchAll(n *trieNode, pattern, rest string, depth int, fn func(uint32, string)) error {
	if depth > trieMaxDepth {
		return fmt.Errorf("%s: the patterns under %q nest deeper than %d bytes: %w", t.name, pattern[:min(len(pattern), 32)], trieMaxDepth, errTrie)
	}
	if n.kids != nil {
		for c := int(n.first); c <= int(n.last); c++ {
			off := n.child(byte(c))
			if off == 0 {
				continue
			}
			cn, err := t.node(off)
			if err != nil {
				return err
			}
			if err := t.matchAll(&cn, pattern+string([]byte{byte(c)})+cn.prefix, rest, depth+1, fn); err != nil {
				return err
			}
		}
	}
	if n.values != nil && globMatch(pattern, rest) {
		return t.eachValue(n, fn)
	}
	return nil
}
