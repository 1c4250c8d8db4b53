"""The AWS resources of the Tasks API, defined once in `resources.json`.

stack.py deploys it (moto locally), package.py merges it into `chalice package`,
stage.py hands it to a chalice stage for `chalice deploy`, cfn.py resolves its intrinsics.
See docs/deploy.md."""
