"""One asg round on a real unified model loaded from local folders (meant for a GPU machine).

    ASG_DEVICE=cuda ASG_DTYPE=bfloat16 python infra/real_model_round.py janus --model /models/Janus-Pro-1B \
        --images /data/unlabeled --n-images 200
    ASG_DEVICE=cuda ASG_DTYPE=bfloat16 python infra/real_model_round.py composite \
        --vlm /models/llava-1.5-7b-hf --pipeline /models/stable-diffusion-3-medium-diffusers \
        --images /data/unlabeled --n-images 200

The model folder is wrapped as an asg checkpoint that stores the LoRA role adapters and the source
path (the pretrained weights are not copied), then `round_flow` runs ingest -> ... -> fine-tune with
the `verified` preset. Nothing is downloaded: every path must already be on disk. Memory and time
notes: models/ADAPTERS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import flows  # noqa: E402,F401 - offline defaults for Prefect and MLflow


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["janus", "composite"])
    parser.add_argument("--model", help="janus: local folder of a Janus / Janus-Pro checkpoint")
    parser.add_argument("--vlm", help="composite: local folder of a transformers image-text-to-text model")
    parser.add_argument("--pipeline", help="composite: local diffusers pipeline folder (transformer/, vae/, scheduler/)")
    parser.add_argument("--images", required=True, help="folder or URL of unlabeled images")
    parser.add_argument("--n-images", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=256, help="side the flywheel stores images at")
    parser.add_argument("--steps", type=int, default=40, help="update steps per role")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args(argv)

    from flows.round import RoundConfig, round_flow
    from storage.checkpoints import checkpoint_uri, save_checkpoint
    from storage.settings import Settings

    settings = Settings.from_env()
    if args.kind == "janus":
        if not args.model:
            parser.error("janus needs --model")
        from models.janus_backbone import JanusBackbone

        backbone = JanusBackbone.from_pretrained(args.model, image_size=args.image_size)
    else:
        if not (args.vlm and args.pipeline):
            parser.error("composite needs --vlm and --pipeline")
        from models.composite_backbone import CompositeBackbone

        backbone = CompositeBackbone.from_pretrained(args.vlm, args.pipeline, image_size=args.image_size)
    backbone.attach_roles()
    base = save_checkpoint(backbone, checkpoint_uri(settings, f"{args.kind}-base"), settings)
    config = RoundConfig(source=args.images, n_images=args.n_images, image_size=args.image_size, preset="verified",
                         evaluation="none", batch_size=args.batch_size, seed_scenes=1,
                         replay_fraction=0.0,  # the shapes world's seed set means nothing to a real model
                         finetune_steps={"solver": args.steps, "proposer": args.steps // 2, "generator": args.steps})
    result = round_flow(0, base, config, experiment=f"asg-{args.kind}")
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, (list, dict))}, indent=1, default=str))
    return result


if __name__ == "__main__":
    main()
