import numpy as np
import pytest

from neurointerp.errors import CohortError, InputError
from neurointerp.io import read_cohort, write_cohort


@pytest.fixture
def images(make_nifti, tmp_path):
    return [make_nifti(f"imgs/s{i}.nii.gz") for i in range(4)]


def write(tmp_path, text, name="cohort.csv", encoding="utf-8"):
    path = tmp_path / name
    path.write_text(text, encoding=encoding)
    return path


def test_valid_table_relative_paths_prefix_and_numeric(tmp_path, images):
    path = write(
        tmp_path,
        "participant_id,image,label,age,sex\n"
        "sub-01,imgs/s0.nii.gz,CN,70.5,F\n"
        "02,imgs/s1.nii.gz,AD,n/a,M\n"
        f"03,{images[2]},AD,80,F\n",
    )
    cohort = read_cohort(path)
    assert cohort.participant_ids == ["01", "02", "03"]
    assert cohort.images[0] == images[0].resolve()
    assert cohort.rows == [2, 3, 4]
    assert cohort.classes == ["AD", "CN"]
    assert cohort.frame["age"].dtype == float and np.isnan(cohort.frame["age"][1])
    assert cohort.frame["sex"].tolist() == ["F", "M", "F"]


def test_documented_messages_all_reported_at_once(tmp_path, images):
    path = write(
        tmp_path,
        "participant_id,image,label,age\n"
        "01,imgs/s0.nii.gz,CN,70\n"  # row 2 ok
        "02,imgs/missing.nii.gz,AD,71\n"  # row 3 missing file
        "01,imgs/s1.nii.gz,AD,72\n"  # row 4 duplicate id
        "../x,imgs/s2.nii.gz,CN,73\n"  # row 5 path characters
        "05,imgs/s3.nii.gz,AD,nan\n",  # row 6 NaN covariate
    )
    with pytest.raises(CohortError) as exc:
        read_cohort(path, numeric=["age"])
    problems = exc.value.problems
    assert "row 3: image 'imgs/missing.nii.gz' not found" in problems
    assert "row 4: duplicate participant_id '01' (first at row 2)" in problems
    assert any(p.startswith("row 5: participant_id '../x' must be letters and digits only") for p in problems)
    assert "row 6: age is missing (NaN)" in problems
    assert len(problems) == 4
    message = str(exc.value)
    assert message.startswith(f"{path} row 3: image 'imgs/missing.nii.gz' not found")
    assert "and 3 more problems" in message and "\n" not in message


def test_single_class_label(tmp_path, images):
    path = write(tmp_path, "participant_id,image,label\n01,imgs/s0.nii.gz,CN\n02,imgs/s1.nii.gz,CN\n")
    with pytest.raises(CohortError, match=r"column 'label': only 1 class \('CN'\); need at least 2"):
        read_cohort(path)
    assert len(read_cohort(path, min_classes=0)) == 2


@pytest.mark.parametrize(
    "text,message",
    [
        ("participant_id,label\n01,CN\n", "row 1: missing column 'image'"),
        ("participant_id,image\n01,imgs/s0.nii.gz\n", "row 1: missing column 'label'"),
        ("participant_id,image,label\n01 a,imgs/s0.nii.gz,CN\n02,imgs/s1.nii.gz,AD\n", "row 2: participant_id '01 a' must be letters"),
        ("participant_id,image,label\n,imgs/s0.nii.gz,CN\n02,imgs/s1.nii.gz,AD\n", "row 2: participant_id is empty"),
        ("participant_id,image,label\n01,imgs/s0.nii.gz\n", "row 2: 2 fields, header has 3"),
        ("participant_id,image,label,age\n01,imgs/s0.nii.gz,CN,old\n02,imgs/s1.nii.gz,AD,3\n", "row 2: age 'old' is not a number"),
        ("participant_id,image,label\n01,imgs/s0.txt,CN\n02,imgs/s1.nii.gz,AD\n", "row 2: image 'imgs/s0.txt' is not a NIfTI file name"),
        ("participant_id,image,label\n", "no rows after the header"),
    ],
)
def test_bad_tables(tmp_path, images, text, message):
    path = write(tmp_path, text)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_cohort(path, numeric=["age"] if "age" in text.splitlines()[0].split(",") else ())


def test_bom_tsv_and_wrong_delimiter(tmp_path, images):
    tsv = write(tmp_path, "participant_id\timage\tlabel\n01\timgs/s0.nii.gz\tCN\n02\timgs/s1.nii.gz\tAD\n", name="c.tsv", encoding="utf-8-sig")
    assert read_cohort(tsv).participant_ids == ["01", "02"]
    semi = write(tmp_path, "participant_id;image;label\n01;imgs/s0.nii.gz;CN\n", name="c.csv")
    with pytest.raises(InputError, match="semicolon-separated"):
        read_cohort(semi)
    tabbed = write(tmp_path, "participant_id\timage\tlabel\n01\timgs/s0.nii.gz\tCN\n", name="d.csv")
    with pytest.raises(InputError, match="tab-separated but the file name says CSV"):
        read_cohort(tabbed)
    with pytest.raises(InputError, match="cohort table not found"):
        read_cohort(tmp_path / "nope.csv")


def test_sessions_allow_repeated_participants(tmp_path, images):
    path = write(
        tmp_path,
        "participant_id,session_id,image,label\n01,ses-1,imgs/s0.nii.gz,CN\n01,2,imgs/s1.nii.gz,CN\n02,1,imgs/s2.nii.gz,AD\n01,1,imgs/s3.nii.gz,CN\n",
    )
    with pytest.raises(CohortError, match="row 5: duplicate participant_id '01' with session_id '1' \\(first at row 2\\)"):
        read_cohort(path)


def test_write_cohort_round_trip_relative(tmp_path, images):
    path = write(tmp_path, "participant_id,image,label\n01,imgs/s0.nii.gz,CN\n02,imgs/s1.nii.gz,AD\n")
    cohort = read_cohort(path)
    out = write_cohort(tmp_path / "copy.tsv", cohort.frame)
    assert "imgs/s0.nii.gz" in out.read_text()
    assert read_cohort(out).images == cohort.images


# ---------------------------------------------------------------------------- issue 20: labels, ids


@pytest.mark.parametrize(
    "labels, spelled",
    [
        (["1", "0", "1.0", "0"], "label '1' (row 2) and '1.0' (row 4) are one class spelled 2 ways"),
        (["01", "0", "1", "0"], "label '01' (row 2) and '1' (row 4)"),
        (["patient", "control", "Patient", "control"], "label 'patient' (row 2) and 'Patient' (row 4)"),
    ],
)
def test_one_class_spelled_two_ways_is_refused_naming_the_rows(tmp_path, images, labels, spelled):
    """'1' and '1.0' must not become two classes (a 3-class model from a binary table)."""
    rows = "".join(f"0{i},imgs/s{i}.nii.gz,{lab}\n" for i, lab in enumerate(labels))
    path = write(tmp_path, "participant_id,image,label\n" + rows)
    with pytest.raises(CohortError) as info:
        read_cohort(path)
    assert str(info.value).startswith(f"{path} row 2: ") and spelled in str(info.value)
    assert "\n" not in str(info.value)


def test_numeric_labels_of_a_regression_and_distinct_classes_are_accepted(tmp_path, images):
    rows = "".join(f"0{i},imgs/s{i}.nii.gz,{lab}\n" for i, lab in enumerate(["1", "1.0", "2.5", "0"]))
    path = write(tmp_path, "participant_id,image,label\n" + rows)
    assert len(read_cohort(path, numeric=["label"], min_classes=0)) == 4  # a number is a number
    ok = write(tmp_path, "participant_id,image,label\n" + "".join(f"0{i},imgs/s{i}.nii.gz,{lab}\n" for i, lab in enumerate(["10", "1", "0", "1"])), "ok.csv")
    assert read_cohort(ok).classes == ["0", "1", "10"]


@pytest.mark.parametrize("column", ["participant_id", "session_id"])
def test_ids_too_long_for_file_names_are_refused_up_front(tmp_path, images, column):
    long_id = "x" * 65
    pid, ses = (long_id, "1") if column == "participant_id" else ("02", long_id)
    path = write(tmp_path, f"participant_id,session_id,image\n01,1,imgs/s0.nii.gz\n{pid},{ses},imgs/s1.nii.gz\n")
    with pytest.raises(CohortError, match=rf"row 3: {column} 'xxxxxxxxxxxxxxxx\.\.\.' is 65 characters long; at most 64 fit in output file names"):
        read_cohort(path, require_label=False)
    fine = write(tmp_path, f"participant_id,session_id,image\n{'y' * 64},1,imgs/s0.nii.gz\n", "fine.csv")
    assert read_cohort(fine, require_label=False).participant_ids == ["y" * 64]


def test_ids_stay_text_in_tables_the_tool_reads_back(tmp_path):
    from neurointerp.io.cohort import read_table_keeping_ids

    p = tmp_path / "predictions.tsv"
    p.write_text("participant_id\tsession_id\tlabel\tscore\n01\t02\t1\t0.5\n10\t\t0\t0.25\n")
    frame = read_table_keeping_ids(p)
    assert frame["participant_id"].tolist() == ["01", "10"] and frame["session_id"].tolist() == ["02", ""]
    assert frame["score"].dtype == float  # other columns are parsed as usual
    assert read_table_keeping_ids(p, text_columns=("label",))["label"].tolist() == ["1", "0"]
