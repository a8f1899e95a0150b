"""The website builder: records -> template data (`context`) -> Markdown and exports (`render`)
-> files on disk and an mkdocs site (`build`). Nothing here validates records; `kb build` runs the
checks first and refuses to build a knowledge base with problems."""
