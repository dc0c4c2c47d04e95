#!/usr/bin/env bash
# Fails when a trap in Sources/ does not name the invariant it guards.
#
# Rule (issue 11): nothing that bytes from the network or a call the documentation
# allows can reach may stop the program; such a failure is a thrown error. Every trap
# that stays guards an internal invariant, or a misuse the documentation forbids, and
# says which with a comment `// invariant: <what>` on the same line or on the line
# directly above the trap.
#
# What counts as a trap:
#   Swift: precondition(  preconditionFailure(  fatalError(  assertionFailure(
#          try!  as!  .unsafelyUnwrapped (unchecked in release builds: worse than a trap)
#          a postfix force unwrap: an identifier, `)` or `]` followed by `!` that is not
#          part of `!=` / `!==` (best effort: `x!`, `f()!`, `a[i]!`, `Int!`)
#   C:     abort(  assert(   (`_Static_assert` is compile time and allowed)
# Allowed without a comment: Swift's `assert(` (debug builds only; it never stops a
# release build) and everything in comments and on one-line string literals (both are
# blanked before matching; a force unwrap inside a string interpolation is not seen).
#
# Usage: scripts/check-traps.sh [directory]   (default: Sources, from the package root)
# Exit status: 0 when every trap is annotated, 1 otherwise (each offender is printed as
# file:line: text), 2 when the directory does not exist. Needs only bash, find and awk.
set -euo pipefail

cd "$(dirname "$0")/.."
root="${1:-Sources}"
if [[ ! -d "$root" ]]; then
    echo "check-traps: no directory $root" >&2
    exit 2
fi

status=0
while IFS= read -r -d '' file; do
    if ! awk -v file="$file" '
        function blank(line,    out, i, c, n, inString) {
            # Blank string literals and comments, keeping the column layout simple.
            out = ""; inString = 0; n = length(line)
            for (i = 1; i <= n; i++) {
                c = substr(line, i, 1)
                if (inBlock) {
                    if (c == "*" && substr(line, i + 1, 1) == "/") { inBlock = 0; i++ }
                    continue
                }
                if (inString) {
                    if (c == "\\") { i++; continue }
                    if (c == "\"") { inString = 0; out = out "\"" }
                    continue
                }
                if (c == "\"") { inString = 1; out = out "\""; continue }
                if (c == "/" && substr(line, i + 1, 1) == "/") break
                if (c == "/" && substr(line, i + 1, 1) == "*") { inBlock = 1; i++; continue }
                out = out c
            }
            return out
        }
        BEGIN { inBlock = 0; previous = ""; bad = 0; isC = (file ~ /\.(c|h)$/) }
        {
            raw = $0
            code = blank(raw)
            trap = 0
            if (isC) {
                if (code ~ /(^|[^A-Za-z0-9_])abort[ \t]*\(/) trap = 1
                if (code ~ /(^|[^A-Za-z0-9_])assert[ \t]*\(/) trap = 1
            } else {
                if (code ~ /(^|[^A-Za-z0-9_])(precondition|preconditionFailure|fatalError|assertionFailure)[ \t]*\(/) trap = 1
                if (code ~ /(^|[^A-Za-z0-9_])(try|as)!/) trap = 1
                if (code ~ /\.unsafelyUnwrapped/) trap = 1
                # A postfix `!`: after an identifier character, `)` or `]`, not `!=`.
                probe = code
                gsub(/(try|as)!/, "", probe)
                if (probe ~ /[A-Za-z0-9_)\]]![^=]/ || probe ~ /[A-Za-z0-9_)\]]!$/) trap = 1
            }
            if (trap && raw !~ /\/\/ *invariant:/ && previous !~ /\/\/ *invariant:/) {
                printf "%s:%d: %s\n", file, NR, raw
                bad = 1
            }
            previous = raw
        }
        END { exit bad }
    ' "$file"; then
        status=1
    fi
done < <(find "$root" -type f \( -name '*.swift' -o -name '*.c' -o -name '*.h' \) -print0 | sort -z)

if [[ $status -ne 0 ]]; then
    echo "check-traps: the traps above carry no '// invariant:' comment (same line or the line above)." >&2
    echo "Make each one a thrown error, or name the invariant it guards (see this script's header)." >&2
fi
exit $status
