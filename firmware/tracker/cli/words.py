# Splitting a command line into words, quoting values back, and "did you mean" (pure logic).


class WordError(ValueError):
    pass


def split(line):
    """Words of `line`: separated by spaces; "double" or 'single' quotes keep spaces, and in
    double quotes \\" and \\\\ escape. WordError for an unclosed quote."""
    words = []
    word = None  # None: between words ("" is a real, empty word: "")
    quote = None
    i = 0
    n = len(line)
    while i < n:
        c = line[i]
        i += 1
        if quote is not None:
            if c == quote:
                quote = None
            elif c == "\\" and quote == '"' and i < n and line[i] in '"\\':
                word += line[i]
                i += 1
            else:
                word += c
        elif c == " " or c == "\t":
            if word is not None:
                words.append(word)
                word = None
        elif c == '"' or c == "'":
            quote = c
            if word is None:
                word = ""
        else:
            word = c if word is None else word + c
    if quote is not None:
        raise WordError("unclosed %s quote" % quote)
    if word is not None:
        words.append(word)
    return words


def quote(text):
    """`text` as one word for split(): bare when it can be, else in double quotes."""
    if text and not any(c in text for c in " \t\"'\\"):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def distance(a, b, limit=3):
    """Edit distance (insert, delete, substitute, swap neighbours) up to `limit`; more is
    reported as limit + 1."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev2 = None
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            d = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d = min(d, prev2[j - 2] + 1)
            cur[j] = d
        prev2, prev = prev, cur
    return min(prev[len(b)], limit + 1)


def closest(word, choices, limit=2):
    """The choice nearest to `word` within `limit` edits (or that `word` starts), or None."""
    best = None
    best_d = limit + 1
    for c in choices:
        d = distance(word, c, limit)
        if d < best_d:
            best, best_d = c, d
    if best is None and len(word) >= 2:
        for c in choices:
            if c.startswith(word):
                return c
    return best


def common_prefix(words):
    if not words:
        return ""
    p = words[0]
    for w in words[1:]:
        n = 0
        while n < len(p) and n < len(w) and p[n] == w[n]:
            n += 1
        p = p[:n]
    return p
