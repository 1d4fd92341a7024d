"""The words on the page: a title and a two-line, plain-language explanation for every panel (classroom use)."""

TITLE = "# The merge explorer"
INTRO = (
    "Several copies of one CLIP image model were each fine-tuned on one task (digits, shapes, ...): the *experts*. "
    "Merging makes **one** model that should do all tasks. Follow the steps from top to bottom."
)

MODELS = (
    "**1. Models.** A *zoo* is a base model plus one expert per task, all fine-tuned from that base. "
    "The pocket zoo is tiny and works offline; the paper's zoos download about 3 GB (ViT-B/32) from the Hugging Face "
    "hub."
)
MERGE = (
    "**2. Merge.** Task arithmetic adds each expert's change (its *task vector*) to the base, scaled by lambda; TIES "
    "first trims and reconciles the changes. WEMoE keeps every expert's MLP weights and lets a small *router* per "
    "layer mix them **per image**."
)
ADAPT = (
    "**Adaptation.** The routers learn without labels: on unlabeled test images they are nudged to make confident "
    "predictions (low entropy). Cancel keeps the routers as they were at the last finished step."
)
TRY = (
    "**3. Try images.** See how the merged model classifies one image next to the expert of its task (tick 'every "
    "model' for all of them), and which task the routers think it comes from."
)
ROUTING_WEIGHTS = (
    "**Reading the heatmap.** Each row is a layer, each column an expert. A cell is the *coefficient* with which that "
    "layer adds the expert's task vector (its change of the pretrained MLP weights) for this image, like task "
    "arithmetic's lambda. Coefficients are not probabilities: they can be negative (the change is subtracted) or "
    "above 1, and a row need not sum to 1. Untrained routers give every expert the same coefficient (WEMoE's lambda "
    "setting, 0.3 by default): that is task arithmetic, and says nothing about the image's task."
)
ACCURACY = (
    "**4. Accuracy.** Each model on each task's test images, the average first. **Bold on green** marks the best "
    "merge in each column. The rows in *italics* are references, not merges: pretrained (the starting point), "
    "experts (each measured on its own task: the upper bound a merge tries to reach) and the oracle."
)
ROUTING = (
    "**5. Routing.** Averaged over each task's images, which experts do the routers pick in each layer? Notice that "
    "images of one task lean towards the same experts, and that the map of features groups images by task. The "
    "weights are task-vector coefficients, not probabilities (see 'Reading the heatmap' in step 3)."
)
EXPORT = (
    "**6. Export.** Download a merged model (safetensors: open_clip-loadable for static merges, WEMoE format for "
    "WEMoE) and the results (CSV table, JSON report)."
)
