"""DVC stage `sample`: generate the default dataset in the Kaggle layout (data/sample)."""

from whaleid.config import Params, runtime_of
from whaleid.data.sample import write_dataset
from whaleid.pipeline.paths import SAMPLE_DIR
from whaleid.pipeline.stage import run_stage


def main(params: Params) -> None:
    write_dataset(params.sample, SAMPLE_DIR, run=runtime_of(params))


if __name__ == "__main__":
    run_stage("sample", main)
