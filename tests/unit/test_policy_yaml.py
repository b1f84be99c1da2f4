"""YAML loading with positions: 1-based line:column of keys and values, problems not exceptions."""

from retentiond.policy.yaml_positions import (
    Position,
    YamlList,
    YamlMap,
    YamlScalar,
    load_yaml,
)


def test_positions_of_keys_values_and_list_items() -> None:
    text = "policies:\n  - name: ci\n    repositories: [a, 'b/**']\n"
    document = load_yaml(text, "p.yaml")
    assert document.problems == ()
    root = document.root
    assert isinstance(root, YamlMap)
    policies = root.entries["policies"]
    assert policies.key_position == Position(1, 1)
    assert isinstance(policies.value, YamlList)
    item = policies.value.items[0]
    assert isinstance(item, YamlMap)
    assert item.position == Position(2, 5)
    assert item.entries["name"].value == YamlScalar("ci", Position(2, 11))
    repositories = item.entries["repositories"].value
    assert isinstance(repositories, YamlList)
    assert [i.position for i in repositories.items] == [Position(3, 20), Position(3, 23)]


def test_scalars_are_typed_as_yaml_says() -> None:
    document = load_yaml("a: 10\nb: true\nc: 0.8\nd: ~\ne: '10'\nf: on\n", "x.yaml")
    assert isinstance(document.root, YamlMap)
    values = {k: e.value for k, e in document.root.entries.items()}
    assert {k: v.value for k, v in values.items() if isinstance(v, YamlScalar)} == {
        "a": 10,
        "b": True,
        "c": 0.8,
        "d": None,
        "e": "10",
        "f": True,
    }


def test_syntax_error_is_one_problem_at_the_mark() -> None:
    document = load_yaml("a: 1\nb: [1, 2\nc: 3\n", "x.yaml")
    assert document.root is None
    assert len(document.problems) == 1
    problem = document.problems[0]
    assert (problem.file, problem.line, problem.column) == ("x.yaml", 3, 2)
    assert problem.message.startswith("invalid YAML: ")


def test_bad_indentation_is_reported_with_its_line() -> None:
    document = load_yaml("keep:\n  last: 1\n   within: 2d\n", "x.yaml")
    assert [(p.line, p.column) for p in document.problems] == [(3, 10)]


def test_duplicate_keys_are_reported_at_the_second_one() -> None:
    document = load_yaml("keep:\n  last: 1\n  last: 2\n", "x.yaml")
    assert [str(p) for p in document.problems] == [
        "x.yaml:3:3: duplicate key 'last' (first at line 2, column 3); remove one of them"
    ]


def test_every_duplicate_key_is_reported() -> None:
    document = load_yaml("a: 1\na: 2\nb:\n  c: 1\n  c: 2\n", "x.yaml")
    assert [(p.line, p.column) for p in document.problems] == [(2, 1), (5, 3)]


def test_empty_file_has_no_root_and_no_problem() -> None:
    document = load_yaml("# only a comment\n", "x.yaml")
    assert document.root is None
    assert document.problems == ()


def test_unsafe_and_unknown_tags_are_problems() -> None:
    document = load_yaml("a: !!python/object:os.system x\nb: !custom y\n", "x.yaml")
    assert [(p.line, p.column) for p in document.problems] == [(1, 4), (2, 4)]
    assert "unsupported YAML tag" in document.problems[0].message


def test_merge_keys_and_aliases() -> None:
    text = "common: &keep {last: 5, within: 7d}\nother:\n  <<: *keep\n  last: 10\n"
    document = load_yaml(text, "x.yaml")
    assert document.problems == ()
    assert isinstance(document.root, YamlMap)
    other = document.root.entries["other"].value
    assert isinstance(other, YamlMap)
    last = other.entries["last"].value
    within = other.entries["within"].value
    assert isinstance(last, YamlScalar) and isinstance(within, YamlScalar)
    assert (last.value, last.position) == (10, Position(4, 9))
    assert (within.value, within.position) == ("7d", Position(1, 33))


def test_recursive_alias_is_a_problem_not_a_hang() -> None:
    document = load_yaml("a: &x [*x]\n", "x.yaml")
    assert [(p.line, p.column) for p in document.problems] == [(1, 4)]


def test_non_string_keys_are_problems() -> None:
    document = load_yaml("? [a, b]\n: 1\n", "x.yaml")
    assert [p.message for p in document.problems] == [
        "a key must be a plain string, not a list or mapping"
    ]


def test_alias_bomb_is_one_problem_not_a_hang() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n"
        for p, n in zip("abcdefg", "bcdefgh", strict=True)
    )
    document = load_yaml(bomb, "x.yaml")
    assert document.root is None
    assert [p.message for p in document.problems] == [
        "aliases (*name) copy more than 10000 values in this file (an alias bomb?); write the"
        " values out instead of nesting aliases of aliases"
    ]


def test_aliases_within_the_bound_still_work() -> None:
    text = "a: &a [x, x, x]\nb: &b [*a, *a, *a]\nc: [*b, *b, *b]\n"
    document = load_yaml(text, "x.yaml")
    assert document.problems == ()


def test_nesting_deeper_than_64_levels_is_one_problem() -> None:
    for text in (
        "a: " + "[" * 500 + "]" * 500,
        "a:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 70)) + "  " * 70 + "v\n",
    ):
        document = load_yaml(text, "x.yaml")
        assert document.root is None
        (problem,) = document.problems
        assert problem.message.startswith("nested more than 64 levels deep")


def test_aliases_cannot_nest_past_the_bound_either() -> None:
    inner = "[" * 40 + "x" + "]" * 40
    text = f"a: &a {inner}\nb: &b {'[' * 30}*a{']' * 30}\n"
    (problem,) = load_yaml(text, "x.yaml").problems
    assert "counting what aliases (*name) bring in" in problem.message


def test_messages_quote_only_an_excerpt_of_the_file() -> None:
    secret = "x" * 30 + "TAIL-OF-A-SECRET" + "y" * 100
    document = load_yaml(f"{secret}: 1\n{secret}: 2\nz: !{secret} 3\nw: *{secret}\n", "x.yaml")
    for problem in document.problems:
        assert "TAIL-OF-A-SECRET" not in problem.message
        assert "\n" not in problem.message
