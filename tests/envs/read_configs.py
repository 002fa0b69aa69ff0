"""Run by another interpreter (an older or pinned datasets): load every config of a built folder.

Reads the configs from the card's YAML as a client would, loads each one in memory and streaming,
and prints one JSON object: {"datasets": version, "configs": {name: {split: {"loaded": [image_id],
"streamed": [image_id], "mode": PIL mode of the first image}}}}. Imports only datasets (and yaml,
which datasets needs), so it runs in any environment that has them.

    python read_configs.py BUILT_FOLDER
"""

import json
import sys

import datasets
import yaml


def main(folder: str) -> None:
    header = open(f"{folder}/README.md", encoding="utf-8").read().split("---\n")[1]
    result = {"datasets": datasets.__version__, "configs": {}}
    for config in yaml.safe_load(header)["configs"]:
        name = config["config_name"]
        loaded = datasets.load_dataset(folder, name)
        streamed = datasets.load_dataset(folder, name, streaming=True)
        result["configs"][name] = {
            split: {
                "loaded": list(loaded[split]["image_id"]),
                "streamed": [row["image_id"] for row in streamed[split]],
                "mode": loaded[split][0]["image"].mode,
            }
            for split in loaded
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
