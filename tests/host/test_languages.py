"""Prompts and concept names in other languages and scripts, through every node on a tiny Wan 2.1.

Wan's text encoder (UMT5-XXL) is multilingual and Wan's users often prompt in Chinese. A real Wan text encoder file
carries its own SentencePiece model, which ComfyUI's loader hands the tokenizer as ``tokenizer_data["spiece_model"]``
(a uint8 tensor). The tiny CLIP of the other host tests reads ComfyUI's t5_pile tokenizer, which spells a character
it has no piece for as UTF-8 bytes (byte fallback), so it never reads Chinese as its unknown token. Here a tiny
SentencePiece model is trained on the test's own prompts (pad 0 and end 1, as ComfyUI's Wan encoder expects; unknown
2; NFKC; no byte fallback) and handed to the tiny CLIP as a checkpoint holds it, so that the unknown token and NFKC
folding are met too. Whether the real UMT5 tokenizer falls back to bytes is not checked here (no real files). The
unknown-token warnings are also met through the T5 tokenizer files that ship with ComfyUI (LTX-Video, Mochi and
Cosmos read them; no Chinese, no emoji, no byte fallback), on a tiny T5 built through each family's own classes.
"""

from __future__ import annotations

import io
import json
import logging

import numpy as np
import pytest
import torch

CONCEPT = "劳力士"
PAIRS = "\n".join([
    "桌子上的一块劳力士手表 | 桌子上的一块手表",
    "手腕上的一块劳力士手表 | 手腕上的一块手表",
    "商店橱窗里的一块金色劳力士手表 | 商店橱窗里的一块金色手表",
    "机场里一个男人看着他的劳力士手表 | 机场里一个男人看着他的手表",
    "沙滩上的一块劳力士手表 | 沙滩上的一块手表",
    "часы Ролекс на столе | часы на столе",
    "une montre Rolex posée sur la table du café | une montre posée sur la table du café",
])
NEUTRAL = "一只猫在沙发上睡觉\n公园里的一条狗\nсобака бежит по пляжу\nun vélo devant un café"
VALIDATION = "\n".join([
    "窗台上的一块劳力士手表 | 窗台上的一块手表",
    "盒子里的一块劳力士手表 | 盒子里的一块手表",
    "床头柜上的一块劳力士手表 | 床头柜上的一块手表",
    "雨中的一块劳力士手表 | 雨中的一块手表",
    "一块闪亮的劳力士手表在灯光下 | 一块闪亮的手表在灯光下",
])
#: Validation pairs in Latin script beside VALIDATION's Chinese, written in letters the trained tokenizer has pieces for
#: (and not in its corpus, which stays as it was).
LATIN_VALIDATION = "\n".join([
    "une montre Rolex sur un vélo | une montre sur un vélo",
    "une montre Rolex devant un café | une montre devant un café",
])
#: Watch brands the trained tokenizer has never seen: each side's run reads as one unknown token.
UNKNOWN_ONLY = "桌子上的一块欧米茄手表 | 桌子上的一块浪琴手表"
#: Full-width letters, which NFKC folds into the ASCII ones on the other side.
FULL_WIDTH_ONLY = "桌子上的一块Ｒｏｌｅｘ手表 | 桌子上的一块Rolex手表"
END, UNKNOWN = 1, 2

pytestmark = pytest.mark.usefixtures("inference_mode")


def _sides(text: str) -> list[str]:
    return [side.strip() for line in text.splitlines() for side in line.split("|")]


def _corpus() -> list[str]:
    return [*_sides(PAIRS), *NEUTRAL.splitlines(), *_sides(VALIDATION), "Rolex"]


def train_spiece(corpus: list[str]) -> bytes:
    """A small unigram SentencePiece model of ``corpus``, trained in memory, deterministic (one thread, the input in
    its order); its ids are UMT5's: pad 0, end 1, unknown 2, no start token."""
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=model, model_type="unigram", vocab_size=160,
        hard_vocab_limit=False, character_coverage=1.0, byte_fallback=False, normalization_rule_name="nmt_nfkc",
        pad_id=0, eos_id=END, unk_id=UNKNOWN, bos_id=-1, num_threads=1, shuffle_input_sentence=False, minloglevel=2)
    return model.getvalue()


@pytest.fixture(scope="module")
def spiece_model() -> bytes:
    return train_spiece(_corpus())


@pytest.fixture(scope="module")
def multilingual_clip(tiny, spiece_model):
    with torch.inference_mode():
        return tiny.tiny_wan_clip(spiece_model=torch.frombuffer(bytearray(spiece_model), dtype=torch.uint8))


@pytest.fixture(scope="module")
def nodes(pack):
    from comfyui_video_unlearning.nodes import definitions

    return definitions


@pytest.fixture
def folders(tmp_path, monkeypatch):
    import folder_paths

    monkeypatch.setitem(folder_paths.folder_names_and_paths, "refusal_vectors",
                        ([str(tmp_path / "rv")], {".safetensors"}))
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras", ([str(tmp_path / "loras")], {".safetensors"}))
    folder_paths.filename_list_cache.clear()
    yield tmp_path / "rv"
    folder_paths.filename_list_cache.clear()


def _ids(clip, text: str) -> list[int]:
    (tokens,) = clip.tokenize(text).values()
    return [int(token[0]) for token in tokens[0]]


#: A code point no font maps, other than the one nodes/plot.py compares with.
_UNMAPPED = "\U0010fffd"


def _boxes(text: str, font) -> list[str]:
    """The characters of ``text`` that ``font`` draws as its missing-glyph box (the mask of an unmapped code point)."""
    def mask(character):
        drawn = font.getmask(character)
        return drawn.size, bytes(drawn)

    return [c for c in text if c != " " and mask(c) == mask(_UNMAPPED)]


def _boxed(drawn: list) -> list:
    """The drawn texts with a character drawn as a box, and those characters."""
    return [(text, _boxes(text, font)) for text, font in drawn if _boxes(text, font)]


@pytest.fixture
def drawn(monkeypatch):
    """Every (text, font) drawn with PIL's ImageDraw while the test runs."""
    from PIL import ImageDraw

    calls = []
    original = ImageDraw.ImageDraw.text

    def text(self, xy, content, *args, **kwargs):
        calls.append((content, kwargs.get("font")))
        return original(self, xy, content, *args, **kwargs)

    monkeypatch.setattr(ImageDraw.ImageDraw, "text", text)
    return calls


def test_the_tokenizer_is_the_trained_one_and_reads_every_prompt(multilingual_clip, clip, spiece_model):
    """The tiny CLIP tokenizes with the model it was handed (trained the same twice: the test is reproducible), and no
    prompt of the chain reads as the unknown token. The t5_pile tokenizer of the other host tests reads the same text
    without it too: it spells Chinese characters it has no piece for as bytes."""
    import sentencepiece

    assert train_spiece(_corpus()) == spiece_model
    pieces = sentencepiece.SentencePieceProcessor(model_proto=spiece_model)
    for text in [*_sides(PAIRS), *NEUTRAL.splitlines(), *_sides(VALIDATION)]:
        ids = _ids(multilingual_clip, text)
        assert ids[:ids.index(END)] == pieces.encode(text) and UNKNOWN not in ids, text
        pile = _ids(clip, text)
        assert 0 not in pile[:pile.index(2)], text  # t5_pile: unknown 0, end 2
    assert UNKNOWN in _ids(multilingual_clip, "欧米茄")


def test_chinese_pairs_and_concept_go_through_every_node_verbatim(nodes, wan, multilingual_clip, folders, caplog,
                                                                  drawn):
    """Pair Encoder -> Collect Activations -> Low-Rank Refusal Vector -> Save Refusal Vector (text and digests) ->
    Load Refusal Vector -> Apply Unlearning, Export Unlearning as LoRA and Unlearning Check, with Chinese pairs, a
    Russian and a French one, and a Chinese concept name: the files' metadata gives the prompts and the name back as
    written, file names made of the name are valid ones, what the nodes show keeps the text as typed, and their charts
    draw no missing glyph."""
    import comfy.utils

    from comfyui_video_unlearning.core.pairs import parse_pairs, parse_prompts, prompt_digest
    from comfyui_video_unlearning.core.serialization import read_metadata
    from comfyui_video_unlearning.nodes.check import UI_KEY as CHECK_KEY, UnlearningCheck
    from comfyui_video_unlearning.nodes.plot import UI_KEY as CHART_KEY

    written = [(p.unsafe, p.safe) for p in parse_pairs(PAIRS)]
    encoded = nodes.PairEncoder.execute(multilingual_clip, PAIRS, NEUTRAL, CONCEPT)
    assert encoded.ui[nodes.PAIR_WARNINGS_KEY] == [{"pairs": 7, "warnings": []}]
    assert encoded[0].concept == CONCEPT and [(p.unsafe, p.safe) for p in encoded[0].pairs] == written
    activations = nodes.CollectActivations.execute(wan, encoded[0], 64, 64, 1, "2", 0, "default", 0, -1)[0]
    with caplog.at_level(logging.WARNING):
        fitted = nodes.RefusalVectorNode.execute(activations, "cpca", 4, 1.0)
    assert drawn and _boxed(drawn) == []  # before: the title's concept as three boxes
    basis, chart = fitted[0], fitted.ui[CHART_KEY][0]
    assert basis.concept == CONCEPT and chart["concept"] == CONCEPT and chart["title"].startswith(f"{CONCEPT}: ")
    assert chart["concept_in_picture"] is False  # Pillow's bundled font has no Chinese glyphs: the caption names it
    for note in chart["pair_notes"]:  # the random tiny model may find pairs that carry less: logged with the name
        assert f"Low-Rank Refusal Vector ({CONCEPT}): {note}" in caplog.text

    assert nodes.SaveRefusalVector.validate_inputs(filename_prefix=f"{CONCEPT}/{CONCEPT} 向量") is True
    name = nodes.SaveRefusalVector.execute(basis, f"{CONCEPT}/{CONCEPT} 向量", "text").ui["text"][0]
    assert name == f"{CONCEPT}/{CONCEPT} 向量_00001.safetensors" and (folders / name).is_file()
    metadata = read_metadata(folders / name)
    assert metadata["concept"] == CONCEPT and [tuple(pair) for pair in metadata["pairs"]] == written
    assert metadata["measurement"]["neutral_prompts"] == parse_prompts(NEUTRAL)

    hidden = nodes.SaveRefusalVector.execute(basis, CONCEPT, "digests").ui["text"][0]
    assert hidden == f"{CONCEPT}_00001.safetensors"
    metadata = read_metadata(folders / hidden)
    assert [tuple(pair) for pair in metadata["pairs"]] == [tuple(map(prompt_digest, pair)) for pair in written]
    stored = (folders / hidden).read_bytes()
    for prompt in [*_sides(PAIRS), *NEUTRAL.splitlines()]:  # neither as UTF-8 nor JSON-escaped
        assert prompt.encode() not in stored and json.dumps(prompt)[1:-1].encode() not in stored, prompt

    loaded = nodes.LoadRefusalVector.execute(name)[0]
    assert loaded.concept == CONCEPT and [tuple(pair) for pair in loaded.pairs] == written
    applied = nodes.ApplyUnlearning.execute(wan, loaded, 1.0, True, "all in vector", 0, -1, "zero")
    assert applied.ui["video_unlearning"][0]["concept"] == CONCEPT and applied.ui["video_unlearning"][0]["layers"] == 4
    lora = nodes.ExportLoRA.execute(wan, loaded, 1.0, "zero", f"unlearning/{CONCEPT}").ui["text"][0]
    assert lora == f"unlearning/{CONCEPT}_00001.safetensors"
    assert comfy.utils.load_torch_file(str(folders.parent / "loras" / lora), return_metadata=True)[1][
        "video_unlearning_concept"] == CONCEPT

    validation = nodes.PairEncoder.execute(multilingual_clip, VALIDATION, NEUTRAL, CONCEPT)[0]
    checked = UnlearningCheck.execute(wan, loaded, "0, 1", "default", 0, -1, "zero", "none", 64, 64, 1, "0.5", 0,
                                      validation_pairs=validation)
    assert any(text.startswith("Unlearning check: ") for text, _ in drawn) and _boxed(drawn) == []
    table, shown = checked[2], checked.ui[CHECK_KEY][0]
    assert f"\n{CONCEPT}: 4 layers (default)\n" in table and shown["table"] == table
    assert shown["label"] == f"{CONCEPT}: 4 layers (default)"
    # validation pairs in one script: the pooled share is the only one
    assert "removed by script" not in table and shown["removed_by_script"] == []


def test_the_check_reports_removal_per_script_of_mixed_validation_pairs(nodes, wan, multilingual_clip):
    """Validation pairs in Chinese and French: Unlearning Check's table and node data give each script's removed
    share beside the pooled one (before, only the pooled share: a script's few pairs hid in it)."""
    from comfyui_video_unlearning.nodes.check import UI_KEY as CHECK_KEY, UnlearningCheck

    encoded = nodes.PairEncoder.execute(multilingual_clip, PAIRS, NEUTRAL, CONCEPT)[0]
    activations = nodes.CollectActivations.execute(wan, encoded, 64, 64, 1, "2", 0, "default", 0, -1)[0]
    basis = nodes.RefusalVectorNode.execute(activations, "cpca", 4, 1.0)[0]
    validation = nodes.PairEncoder.execute(multilingual_clip, f"{VALIDATION}\n{LATIN_VALIDATION}", NEUTRAL,
                                           CONCEPT)[0]
    checked = UnlearningCheck.execute(wan, basis, "0, 1", "default", 0, -1, "zero", "none", 64, 64, 1, "0.5", 0,
                                      validation_pairs=validation)
    table, shown = checked[2], checked.ui[CHECK_KEY][0]
    rows = shown["removed_by_script"]
    assert [(row["script"], row["pairs"]) for row in rows] == [("Han", 5), ("Latin", 2)]
    at = shown["removed_by_script_strength"]
    assert at == 1.0  # the recommended strength, or full projection where the check recommends 0
    listed = ", ".join(f"{row['script']} {row['removed']:.0%} ({row['pairs']} pairs)" for row in rows)
    assert f"\nremoved by script at 1.00: {listed}" in table and shown["table"] == table


def test_sides_the_tokenizer_reads_alike_are_refused_with_the_reason(nodes, multilingual_clip, clip):
    """Sides that differ only in characters the tokenizer lacks (each run reads as its one unknown token), or only in
    full-width letters (NFKC folds them into ASCII ones), reach the model as one encoding: Pair Encoder refuses the
    pair, naming both causes. The t5_pile tokenizer spells the unknown brands as different bytes: it measures them."""
    base = VALIDATION.splitlines()[:4]
    for line in (UNKNOWN_ONLY, FULL_WIDTH_ONLY):
        unsafe, safe = (side.strip() for side in line.split("|"))
        assert _ids(multilingual_clip, unsafe) == _ids(multilingual_clip, safe)
        with pytest.raises(ValueError, match="^Pair Encoder: line 5: both sides reach the model as the same text "
                                             "encoding") as refused:
            nodes.PairEncoder.execute(multilingual_clip, "\n".join([*base, line]), NEUTRAL, CONCEPT)
        assert "unknown token" in str(refused.value) and "full-width" in str(refused.value)
    measured = nodes.PairEncoder.execute(clip, "\n".join([*base, UNKNOWN_ONLY]), NEUTRAL, CONCEPT)[0].pairs[4]
    assert (measured.unsafe, measured.safe) == tuple(side.strip() for side in UNKNOWN_ONLY.split("|"))


#: A pair whose concept the tiny tokenizer has never seen: '欧米茄' reads as its unknown token, the rest as words.
UNREAD_CONCEPT = "桌子上的一块欧米茄手表 | 桌子上的一块手表"
#: Readable pairs in English, for the T5 tokenizer that reads no Chinese.
ENGLISH = "\n".join([
    "a Rolex watch on a wooden table | a watch on a wooden table",
    "a close-up of a Rolex on a wrist | a close-up of a watch on a wrist",
    "a gold Rolex in a shop window | a gold watch in a shop window",
    "a man checking his Rolex at the airport | a man checking his watch at the airport",
])
ENGLISH_NEUTRAL = "a dog running on a beach\na cat sleeping on a sofa\nrain falling on a window"


def _warnings(nodes, clip, pairs: str, neutral: str) -> list[str]:
    return nodes.PairEncoder.execute(clip, pairs, neutral, CONCEPT).ui[nodes.PAIR_WARNINGS_KEY][0]["warnings"]


@pytest.fixture(scope="module", params=["ltxv", "mochi", "cosmos"])
def t5_clip(request, tiny):
    with torch.inference_mode():
        return tiny.tiny_t5_clip(request.param)


def test_a_concept_the_t5_tokenizer_cannot_read_is_warned_about(nodes, t5_clip, caplog):
    """The T5 tokenizer of LTX-Video, Mochi and Cosmos (ComfyUI's own files) has no Chinese and no emoji and no byte
    fallback: 'a 劳力士 watch' is 'a watch' with one unknown token. Such a pair passed silently, and its vector removed
    what the model makes of the unknown token. Now Pair Encoder warns, naming the line and the characters it did
    not read; readable pairs, and a pair whose concept is readable beside unread Chinese, do not warn."""
    assert _warnings(nodes, t5_clip, ENGLISH + "\na Rolex on the sand | a watch on the sand", ENGLISH_NEUTRAL) == []
    mixed = ENGLISH + "\na Rolex 手表 on the sand | a 手表 on the sand"  # '手表' reads as the unknown token on both
    assert _warnings(nodes, t5_clip, mixed, ENGLISH_NEUTRAL) == []
    with caplog.at_level(logging.WARNING):
        (adds,) = _warnings(nodes, t5_clip, ENGLISH + "\na 劳力士 watch on the sand | a watch on the sand",
                            ENGLISH_NEUTRAL)
    assert adds.startswith("line 5: what the unsafe (left) side adds reaches the text encoder only as its unknown "
                           "token: its tokenizer has no token for '劳力士', so the pair measures the unknown token")
    assert adds.endswith("Write the concept in words this text encoder reads, in a language its tokenizer covers")
    assert f"Pair Encoder: {adds}" in caplog.text
    (emoji,) = _warnings(nodes, t5_clip, ENGLISH + "\na watch 😀 on the sand | a watch on the sand", ENGLISH_NEUTRAL)
    assert emoji.startswith("line 5: what the unsafe (left) side adds reaches the text encoder only as its unknown "
                            "token: its tokenizer has no token for '😀',")
    (differs,) = _warnings(nodes, t5_clip, ENGLISH + "\na 劳力士 watch on the sand | a watch on the sand 手表",
                           ENGLISH_NEUTRAL)
    assert differs.startswith("line 5: the sides differ, as the text encoder reads them, only by its unknown token: "
                              "its tokenizer has no token for '劳力士', '手表',")


def test_neutral_prompts_the_t5_tokenizer_reads_as_nothing_are_warned_about(nodes, t5_clip):
    """Chinese neutral prompts reach the T5 encoder as one unknown token each, all alike: they subtract no everyday
    variation. One warning names them; a neutral prompt with some words the tokenizer reads is not named."""
    neutral = "一只猫在沙发上睡觉\n公园里的一条狗\na dog 在沙滩上\n" + ENGLISH_NEUTRAL
    (warning,) = _warnings(nodes, t5_clip, ENGLISH + "\na Rolex on the sand | a watch on the sand", neutral)
    assert warning.startswith("neutral_prompts: 2 of the 6 prompts reach the text encoder as nothing but its unknown "
                              "token ('一只猫在沙发上睡觉', '公园里的一条狗'): they add no everyday variation")


def test_a_concept_the_umt5_tokenizer_cannot_read_is_warned_about(nodes, multilingual_clip, clip):
    """With a UMT5 SentencePiece model without byte fallback, a concept it has never seen ('欧米茄') reads as its
    unknown token: warned, naming it. A readable concept beside those characters is not; neither are the Chinese
    pairs of the chain above (``[]`` warnings there). The t5_pile tokenizer spells the characters as bytes: it reads
    them, nothing to warn."""
    base = "\n".join(VALIDATION.splitlines()[:4])
    (warning,) = _warnings(nodes, multilingual_clip, f"{base}\n{UNREAD_CONCEPT}", NEUTRAL)
    assert warning.startswith("line 5: what the unsafe (left) side adds reaches the text encoder only as its unknown "
                              "token: its tokenizer has no token for '欧米茄',")
    readable = "桌子上的一块劳力士欧米茄手表 | 桌子上的一块欧米茄手表"
    assert _warnings(nodes, multilingual_clip, f"{base}\n{readable}", NEUTRAL) == []
    assert _warnings(nodes, clip, f"{base}\n{UNREAD_CONCEPT}", NEUTRAL) == []


def test_byte_level_tokenizers_have_no_unknown_text(pack):
    """CLIP-L (HunyuanVideo's second text encoder) names an unknown token (its end token), but spells every
    character as bytes it has tokens for: no text reads as it, and a Chinese or emoji concept is not warned about."""
    from types import SimpleNamespace

    import comfy.sd1_clip

    from comfyui_video_unlearning.core.pairs import parse_pairs
    from comfyui_video_unlearning.nodes.text_tokens import token_readers, unknown_token_warnings

    clip = SimpleNamespace(tokenizer=SimpleNamespace(clip_l=comfy.sd1_clip.SDTokenizer()))
    (reader,) = token_readers(clip)
    pairs = parse_pairs(ENGLISH + "\na 劳力士 watch 😀 | a watch", warn=lambda *_: None)
    assert reader.unknown == 49407 and unknown_token_warnings(clip, tuple(pairs), ("一只猫",)) == []


def test_pair_encoder_warnings_and_errors_keep_the_text(nodes, clip, caplog):
    """A Chinese pair written the wrong way round is warned about on the node and in the log with the words it adds,
    as typed; a line written with the full-width bar an input method types is refused, named and quoted as typed."""
    swapped = "\n".join([*VALIDATION.splitlines(), "桌子上的一块手表 | 桌子上的一块劳力士手表"])
    with caplog.at_level(logging.WARNING):
        output = nodes.PairEncoder.execute(clip, swapped, NEUTRAL, CONCEPT)
    (warning,) = output.ui[nodes.PAIR_WARNINGS_KEY][0]["warnings"]
    assert warning.startswith("line 6: the safe (right) side holds every word of the unsafe (left) side and adds "
                              f"'{CONCEPT}'")
    assert f"Pair Encoder: {warning}" in caplog.text
    full_width = "\n".join([*VALIDATION.splitlines()[:4], "桌子上的一块劳力士手表 ｜ 桌子上的一块手表"])
    message = nodes.PairEncoder.validate_inputs(pairs=full_width)
    assert message.startswith("Pair Encoder: pairs: line 5: expected exactly one '|' between the unsafe and the safe "
                              "prompt, found 0 ('｜', U+FF5C, only looks like '|'")
    assert message.endswith(": '桌子上的一块劳力士手表 ｜ 桌子上的一块手表'")


@pytest.mark.parametrize("concept, in_picture", [(CONCEPT, False), ("Ролекс", False), ("Café", False),
                                                 ("Rolex", True), ("", True)],
                         ids=["chinese", "cyrillic", "accented", "ascii", "unnamed"])
def test_the_charts_draw_no_missing_glyph_and_name_the_concept_as_text(pack, drawn, concept, in_picture):
    """Pillow's bundled font has no glyph for Chinese, Cyrillic or 'é': the score chart and the check's chart drew a
    concept named so as boxes. Now a picture draws the name only where the font has every glyph of it, else a stand-in
    that says where the name is; the chart's data names it as typed (the check's table: the test above)."""
    from comfyui_video_unlearning.core.check import CheckResult
    from comfyui_video_unlearning.core.refusal import RefusalFitter
    from comfyui_video_unlearning.nodes import check_chart, plot

    fitter = RefusalFitter()
    generator = torch.Generator().manual_seed(0)
    safe = torch.randn(6, 16, generator=generator, dtype=torch.float64)
    fitter.update("blocks.0.cross_attn.k", safe + 2.0 * torch.eye(16, dtype=torch.float64)[0], safe)
    basis = fitter.fit(rank=2, concept=concept, model_family="wan")
    image = plot.score_chart(basis)
    data = plot.chart_data(basis)
    label = f"{concept or 'concept'}: 1 layers (default)"
    figures = (0.0, 0.5)
    result = CheckResult(strengths=(0.0, 1.0), survival_layers=figures, survival_prediction=figures,
                         collateral_layers=figures, collateral_prediction=figures, recommended=1.0, reason="",
                         layers=("blocks.0.cross_attn.k",), label=label)
    check_chart.check_chart(result, concept=concept)
    assert drawn and all(font is not None for _, font in drawn) and _boxed(drawn) == []
    texts = [text for text, _ in drawn]
    plot_title = next(text for text in texts if "separation per input" in text)
    check_title = next(text for text in texts if text.startswith("Unlearning check: "))
    if in_picture:
        assert plot_title == data["title"] and check_title == f"Unlearning check: {label}"
    else:
        assert plot_title == data["title"].replace(concept, plot.CONCEPT_NOT_DRAWN, 1)
        assert check_title == f"Unlearning check: {check_chart.CONCEPT_NOT_DRAWN}: 1 layers (default)"
    assert data["concept"] == concept and data["concept_in_picture"] is in_picture
    assert data["title"].startswith(f"{concept or 'concept'}: separation per input")
    assert image.shape == (1, plot.HEIGHT, plot.WIDTH, 3) and np.isfinite(image.numpy()).all()


@pytest.mark.parametrize("concept, in_picture", [(CONCEPT, False), ("Ролекс", False), ("Café", True),
                                                 ("Rolex", True), ("", True)],
                         ids=["chinese", "cyrillic", "accented", "ascii", "unnamed"])
def test_the_charts_draw_with_pillow_s_bitmap_font(pack, drawn, monkeypatch, concept, in_picture):
    """A Pillow without FreeType (or before 10.1, whose load_default takes no size) has only its bitmap font, which
    encodes text as Latin-1: getmask of any other character raises UnicodeEncodeError. missing_glyphs asked it for
    U+FFFF first, so every chart (an ASCII concept's too) failed there. Such a character is missing; the bitmap font
    draws 'é', so 'Café' is drawn."""
    from PIL import ImageFont

    from comfyui_video_unlearning.core.check import CheckResult
    from comfyui_video_unlearning.core.refusal import RefusalFitter
    from comfyui_video_unlearning.nodes import check_chart, plot

    bitmap = ImageFont.load_default_imagefont()

    def without_freetype(size=None):
        if size is not None:
            raise ImportError("The _imagingft C module is not installed")  # what Pillow without FreeType raises
        return bitmap

    monkeypatch.setattr(ImageFont, "load_default", without_freetype)
    fitter = RefusalFitter()
    generator = torch.Generator().manual_seed(0)
    safe = torch.randn(6, 16, generator=generator, dtype=torch.float64)
    fitter.update("blocks.0.cross_attn.k", safe + 2.0 * torch.eye(16, dtype=torch.float64)[0], safe)
    basis = fitter.fit(rank=2, concept=concept, model_family="wan")
    assert plot.missing_glyphs(concept, bitmap) == ("" if in_picture else concept)
    image = plot.score_chart(basis)
    data = plot.chart_data(basis)
    figures = (0.0, 0.5)
    result = CheckResult(strengths=(0.0, 1.0), survival_layers=figures, survival_prediction=figures,
                         collateral_layers=figures, collateral_prediction=figures, recommended=1.0, reason="",
                         layers=("blocks.0.cross_attn.k",), label=f"{concept or 'concept'}: 1 layers (default)")
    chart = check_chart.check_chart(result, concept=concept)
    assert drawn and all(font is bitmap for _, font in drawn)
    assert data["concept_in_picture"] is in_picture
    shown = concept or "concept"
    assert any(text.startswith(f"Unlearning check: {shown if in_picture else check_chart.CONCEPT_NOT_DRAWN}: ")
               for text, _ in drawn)
    assert image.shape == (1, plot.HEIGHT, plot.WIDTH, 3) and chart.shape[0] == 1
