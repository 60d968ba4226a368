import json

import pytest

from edgeseg.core.card import SCHEMA_VERSION, CardError, ModelCard, Provenance, load_card, parse_input_size, save_card


def test_card_round_trips_through_json(tmp_path):
    card = ModelCard(input_size=(320, 256), architecture_kwargs={"decoder_pyramid_channels": 128})
    path = save_card(card, tmp_path)
    assert path.name == "card.json"
    assert load_card(tmp_path) == card
    assert load_card(path).input_size == (320, 256)


def test_unknown_schema_version_is_refused_with_the_fix(tmp_path):
    data = ModelCard().to_dict()
    data["schema_version"] = SCHEMA_VERSION + 1
    (tmp_path / "card.json").write_text(json.dumps(data))
    with pytest.raises(CardError, match="schema version .* not supported.*Re-export"):
        load_card(tmp_path)


def test_a_version_1_card_still_loads_without_the_fields_version_2_added(tmp_path):
    data = ModelCard().to_dict()
    data["schema_version"] = 1
    for added in ("evaluations", "data_licence", "data_files_hash"):
        del data["provenance"][added]
    (tmp_path / "card.json").write_text(json.dumps(data))
    card = load_card(tmp_path)
    assert card.provenance.evaluations == {} and card.provenance.data_licence == ""
    assert card.schema_version == SCHEMA_VERSION == 3


@pytest.mark.parametrize("version", [1, 2])
def test_an_older_card_holding_a_data_path_is_read_with_the_folder_name_alone(tmp_path, version):
    data = ModelCard().to_dict()
    data["schema_version"] = version
    del data["provenance"]["data_files_hash"]
    for path, name in (
        ("/work/main/.gpu-data/isic2018", "isic2018"),
        ("C:\\data\\isic2018\\", "isic2018"),
        ("isic2018", "isic2018"),
        ("", ""),
    ):
        data["provenance"]["data"] = path
        (tmp_path / "card.json").write_text(json.dumps(data))
        card = load_card(tmp_path)
        assert card.provenance.data == name and card.provenance.data_files_hash == ""
        assert path == name or path not in card.to_json()


def test_a_card_never_holds_a_data_path(tmp_path):
    data = ModelCard().to_dict()
    data["provenance"]["data"] = "/home/someone/isic2018"
    (tmp_path / "card.json").write_text(json.dumps(data))
    with pytest.raises(CardError, match="is a path; a card names its training data by the folder's name alone"):
        load_card(tmp_path)
    with pytest.raises(CardError, match="'isic2018'"):
        Provenance(data="../data/isic2018")


def test_the_input_size_parser_shares_the_card_rule():
    assert parse_input_size("256") == (256, 256) and parse_input_size(" 256x320 ") == (256, 320)
    for bad in ("250", "256x", "0x32", "abc"):
        with pytest.raises(CardError):
            parse_input_size(bad)


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        (json.dumps({"schema_version": SCHEMA_VERSION}), "malformed"),
    ],
)
def test_malformed_cards_name_the_file(tmp_path, text, message):
    path = tmp_path / "card.json"
    path.write_text(text)
    with pytest.raises(CardError, match=message) as raised:
        load_card(path)
    assert str(path) in str(raised.value)


def test_unknown_field_is_refused(tmp_path):
    data = ModelCard().to_dict()
    data["preprocessing"]["gamma"] = 2.2
    (tmp_path / "card.json").write_text(json.dumps(data))
    with pytest.raises(CardError, match="gamma"):
        load_card(tmp_path)


def test_input_size_must_be_a_multiple_of_32():
    with pytest.raises(CardError, match="multiples of 32. Consider 256x320"):
        ModelCard(input_size=(250, 300))


def test_missing_card_says_what_to_pass(tmp_path):
    with pytest.raises(CardError, match="edgeseg train"):
        load_card(tmp_path)
