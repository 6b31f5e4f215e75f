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
