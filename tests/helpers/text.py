"""Varied text for tokenizer tests and benches: the kinds of strings real captions contain."""
import random


def varied_strings(count: int, seed: int = 0) -> list[str]:
    """Unicode, emoji, CJK, html entities, mojibake, whitespace, long and empty text."""
    rs = random.Random(seed)
    pools = [
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "0123456789",
        " \t\n\r\u00a0\u2003",
        "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
        "àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿßœ",
        "😀😂🤖🎉👍🏽🇯🇵❤️‍🔥",
        "東京タワー日本語中文한국어漢字",
        "العربيةעבריתрусскийελληνικά",
        "\u0301\u0308\u200d\ufe0f",
    ]
    fragments = ["&amp;", "&lt;b&gt;", "&#39;", "&amp;amp;", "cafÃ©", "Ã¢â‚¬â„¢", "'s", "'ll", "'ve",
                 "don't", "<|endoftext|>", "<|startoftext|>", "http://example.com/a?b=1", "a photo of a {}."]
    strings = ["", " ", "\n"]
    while len(strings) < count:
        parts = []
        for _ in range(rs.choice([1, 2, 4, 8, 16, 40])):
            if rs.random() < 0.2:
                parts.append(rs.choice(fragments))
            else:
                pool = rs.choice(pools)
                parts.append("".join(rs.choice(pool) for _ in range(rs.randint(1, 12))))
            parts.append(rs.choice(["", " ", " ", "  "]))
        strings.append("".join(parts))
    strings.append(" ".join(["supercalifragilistic"] * 200))  # very long
    return strings
