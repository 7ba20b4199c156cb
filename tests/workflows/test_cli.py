"""The `recstack` command: every subcommand has --help; `recstack data` reports and rejects clearly."""

from pathlib import Path

import pytest
import yaml

from recstack.cli import build_parser, main

SCHEMA = {
    "label": "label",
    "features": [
        {"name": "user", "kind": "categorical", "side": "user"},
        {"name": "age", "kind": "numeric"},
        {"name": "tags", "kind": "sequence", "weights": "pairs", "pooling": "weighted_sum", "maxlen": 3},
    ],
}


def subcommands() -> list[str]:
    parser = build_parser()
    return sorted(parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr]


def test_every_subcommand_is_listed_once_in_commands() -> None:
    from recstack.cli import COMMANDS

    names = [command.name for command in COMMANDS]
    assert len(names) == len(set(names))
    assert sorted(names) == subcommands()
    for expected in ("item2vec", "encode-text", "synth", "embed-users"):
        assert expected in names


def test_every_subcommand_has_help(capsys: pytest.CaptureFixture) -> None:
    commands = subcommands()
    for expected in ("train", "evaluate", "predict", "data", "datasets", "export", "embed-items", "embed-users", "index", "query", "tune", "serve"):
        assert expected in commands
    for command in commands:
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        assert "usage" in capsys.readouterr().out.lower()


def test_data_prints_per_feature_statistics(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "schema.yaml").write_text(yaml.safe_dump(SCHEMA))
    (tmp_path / "d.csv").write_text('user,age,tags,label\na,30,"1:0.5,2:1.0",1\nb,,3:0.2,0\na,50,,1\n')
    assert main(["data", str(tmp_path / "schema.yaml"), "--data", str(tmp_path / "d.csv")]) == 0
    out = capsys.readouterr().out
    assert "rows: 3" in out and "vocabulary 2" in out and "positive rate 0.6667" in out


def test_data_names_file_row_and_column_of_a_bad_value(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "schema.yaml").write_text(yaml.safe_dump(SCHEMA))
    (tmp_path / "d.csv").write_text("user,age,tags,label\na,30,1:0.5,1\nb,old,3:0.2,0\n")
    assert main(["data", str(tmp_path / "schema.yaml"), "--data", str(tmp_path / "d.csv")]) == 2
    err = capsys.readouterr().err
    assert "d.csv" in err and "row 2" in err and "'age'" in err and "number" in err


def test_metric_lines_show_counts_as_whole_numbers() -> None:
    from recstack.cli import format_metrics

    line = format_metrics({"recall@10": 0.12104, "users": 942.0})
    assert line == "recall@10 0.1210 (942 users)"
    assert format_metrics({"auc": 0.75, "count": 20000}) == "auc 0.7500 (20,000 rows)"
