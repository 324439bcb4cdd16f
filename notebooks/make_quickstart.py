"""Writes quickstart.ipynb (kept as code so its cells are reviewed like code): python notebooks/make_quickstart.py"""

from pathlib import Path

import nbformat as nbf

cells = [
    nbf.v4.new_markdown_cell(
        "# kneepain quickstart\n\n"
        "Score cases of pain behind the knee with the registered champion model.\n\n"
        "**Information, not a diagnosis.** The model is trained on synthetic cases; anyone with knee "
        "pain should seek advice from a doctor or another qualified medical professional.\n\n"
        "Run `make run` first: it generates the data, trains and registers the model."),
    nbf.v4.new_code_cell(
        "import pandas as pd\n"
        "import pipeline\n"
        "from pipeline import predict\n\n"
        "# the champion alias in the MLflow registry (MLFLOW_TRACKING_URI, default mlflow.db at the repo root)\n"
        "model = pipeline.load_model(\"models:/kneepain-classifier@champion\")\n"
        "model.manifest[\"winner\"], model.manifest[\"mlflow_run_id\"]"),
    nbf.v4.new_markdown_cell("## A few hand-typed cases\n\nAny field left out is unknown; only `age` and `sex` are required."),
    nbf.v4.new_code_cell(
        "cases = [\n"
        "    {\"case_id\": \"footballer\", \"age\": 24, \"sex\": \"male\", \"activity\": \"sprint_pivot_sport\",\n"
        "     \"injury_event\": \"twist_or_direction_change\", \"heard_pop\": \"yes\", \"knee_swelling\": \"yes\",\n"
        "     \"giving_way\": \"yes\"},\n"
        "    {\"case_id\": \"long-haul\", \"age\": 71, \"sex\": \"female\", \"sedentary\": \"yes\", \"smoker\": \"yes\",\n"
        "     \"leg_swelling\": \"yes\", \"skin_warm\": \"yes\", \"skin_red\": \"yes\", \"injury_event\": \"none\"},\n"
        "    {\"case_id\": \"gardener\", \"age\": 66, \"sex\": \"female\", \"bmi\": 31, \"onset\": \"gradual\",\n"
        "     \"grinding\": \"yes\", \"stiffness\": \"yes\", \"symptom_duration_days\": 400},\n"
        "]\n"
        "scores = predict(cases, model=model)\n"
        "scores"),
    nbf.v4.new_markdown_cell(
        "## What to do: triage, the differential and atypical cases\n\n"
        "Every scored case also gets a triage level (red flags on the answers, then the level with the "
        "lowest expected cost), the conditions that remain possible (a conformal prediction set with 90% "
        "coverage), and a flag when the answers fit none of the documented profiles."),
    nbf.v4.new_code_cell(
        "scores[[\"case_id\", \"prediction\", \"triage\", \"differential\", \"atypical\"]]"),
    nbf.v4.new_code_cell("print(scores.loc[1, \"triage_reason\"])\nprint(scores.loc[1, \"advice\"])"),
    nbf.v4.new_markdown_cell("## Why, and what to ask next\n\n`explain` weighs each known answer by its log "
                             "likelihood ratio between the two most likely conditions; `next_questions` ranks the "
                             "unknown fields by how much their answer is expected to settle the case (DVT first)."),
    nbf.v4.new_code_cell(
        "from pipeline import explain, next_questions\n\n"
        "why = explain(cases[0], model=model)\n"
        "print(why.text)\n"
        "why.table.head()"),
    nbf.v4.new_code_cell("next_questions(cases[0], model=model, k=3)"),
    nbf.v4.new_markdown_cell("## The probabilities of one case"),
    nbf.v4.new_code_cell(
        "import matplotlib.pyplot as plt\n\n"
        "row = scores.iloc[0]\n"
        "probs = row.filter(like=\"p_\").astype(float).rename(lambda c: c[2:]).sort_values()\n"
        "ax = probs.plot.barh(figsize=(6, 3.5), title=f\"{row['case_id']}: P(condition)\")\n"
        "ax.set_xlim(0, 1)\n"
        "plt.tight_layout()"),
    nbf.v4.new_markdown_cell("## Score a CSV file\n\n`predict` takes a path too; for large files use "
                             "`kneepain score cases.csv -o scored.csv`, which streams."),
    nbf.v4.new_code_cell(
        "import tempfile, os\n\n"
        "kb = pipeline.load_knowledge_base()\n"
        "sample = pipeline.generate_cases(kb, 200, seed=1)\n"
        "path = os.path.join(tempfile.mkdtemp(), \"cases.csv\")\n"
        "sample.drop(columns=[\"condition\", \"severity\"]).to_csv(path, index=False)\n"
        "scored = predict(path, model=model)\n"
        "print(f\"accuracy on these synthetic cases: {(scored['prediction'] == sample['condition'].astype(str)).mean():.2f}\")\n"
        "scored.head()"),
]
nb = nbf.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                               "language": "python"}})
nbf.write(nb, Path(__file__).with_name("quickstart.ipynb"))
