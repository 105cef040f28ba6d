"""Evaluation of Hugging Face encoders: masked-token recovery (Table 3), ESCI / STS-B CoSENT similarity
(Figure 4), GLUE (Table 4) and MTEB tasks, with one JSON results schema (``evaluation.reports``).

Entry points: ``evaluation.mlm_recovery.run_mlm``, ``evaluation.esci_similarity.run_similarity``,
``evaluation.glue.run_glue``, ``evaluation.mteb_eval.run_mteb``, ``evaluation.reports.read_results`` /
``markdown_report``; CLI ``rexbert eval mlm|esci|glue|mteb|report``. Heavy libraries are imported inside
functions.
"""
