//! Queries see every row's resource attributes, though most rows are stored with only
//! their `ResourceId` (see `store::resources`).

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties as _, PlanProperties, SendableRecordBatchStream,
};
use futures::StreamExt as _;

use crate::store::{RESOURCE_ATTRIBUTES_COLUMN, RESOURCE_ID_COLUMN, ResourceCatalog};

/// How a scan of a table reads its sources (memtable and files) so that it can fill in
/// resource attributes above them.
pub(super) struct ResolveResources {
    /// `None` when the scan needs no attributes filled in (the table has no `ResourceId`,
    /// or the query does not read `ResourceAttributes`).
    fill: Option<Fill>,
    projection: Option<Vec<usize>>,
    filters: Vec<Expr>,
}

struct Fill {
    /// The columns of the sources' rows that the scan returns, when the sources read
    /// `ResourceId` only to fill in the attributes.
    keep: Option<Vec<usize>>,
    /// The scan's schema.
    schema: SchemaRef,
}

impl ResolveResources {
    /// Plans a scan of `projection` (of `schema`) under `filters`.
    pub(super) fn plan(schema: &SchemaRef, projection: Option<&Vec<usize>>, filters: &[Expr]) -> Result<Self> {
        let (Ok(ids), Ok(attributes)) = (schema.index_of(RESOURCE_ID_COLUMN), schema.index_of(RESOURCE_ATTRIBUTES_COLUMN))
        else {
            return Ok(Self { fill: None, projection: projection.cloned(), filters: filters.to_vec() });
        };
        // The sources' attributes are sparse: a filter on them there would be wrong. They are
        // all `Inexact`, so DataFusion applies each above the scan, to the filled-in rows.
        let filters = filters
            .iter()
            .filter(|filter| !filter.column_refs().iter().any(|column| column.name == RESOURCE_ATTRIBUTES_COLUMN))
            .cloned()
            .collect();
        if projection.is_some_and(|columns| !columns.contains(&attributes)) {
            return Ok(Self { fill: None, projection: projection.cloned(), filters });
        }
        let (source_projection, keep) = match projection {
            Some(columns) if !columns.contains(&ids) => {
                let keep = (0..columns.len()).collect();
                (Some(columns.iter().copied().chain([ids]).collect()), Some(keep))
            }
            _ => (projection.cloned(), None),
        };
        let scanned = match projection {
            Some(columns) => Arc::new(schema.project(columns)?),
            None => schema.clone(),
        };
        Ok(Self { fill: Some(Fill { keep, schema: scanned }), projection: source_projection, filters })
    }

    /// The columns the sources read.
    pub(super) fn source_projection(&self) -> Option<&Vec<usize>> {
        self.projection.as_ref()
    }

    /// The filters the sources may prune by.
    pub(super) fn source_filters(&self) -> &[Expr] {
        &self.filters
    }

    /// The scan: `sources`, with resource attributes filled in from `resources` if needed.
    pub(super) fn over(self, sources: Arc<dyn ExecutionPlan>, resources: ResourceCatalog) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(Fill { keep, schema }) = self.fill else { return Ok(sources) };
        Ok(Arc::new(FillResourcesExec::new(sources, resources, keep, schema)))
    }
}

/// Fills in the resource attributes of its input's rows (see [`ResourceCatalog::resolve`]).
#[derive(Debug)]
struct FillResourcesExec {
    input: Arc<dyn ExecutionPlan>,
    resources: ResourceCatalog,
    keep: Option<Vec<usize>>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl FillResourcesExec {
    fn new(input: Arc<dyn ExecutionPlan>, resources: ResourceCatalog, keep: Option<Vec<usize>>, schema: SchemaRef) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            input.output_partitioning().clone(),
            input.pipeline_behavior(),
            input.boundedness(),
        );
        Self { input, resources, keep, schema, properties: Arc::new(properties) }
    }
}

impl DisplayAs for FillResourcesExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FillResourcesExec")
    }
}

#[allow(deprecated)] // `with_new_children` is deprecated and still required.
impl ExecutionPlan for FillResourcesExec {
    fn name(&self) -> &str {
        "FillResourcesExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, mut children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        let input = children.swap_remove(0);
        Ok(Arc::new(Self::new(input, self.resources.clone(), self.keep.clone(), self.schema.clone())))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let (resources, keep) = (self.resources.clone(), self.keep.clone());
        let filled = self.input.execute(partition, context)?.map(move |batch| {
            let batch = resources.resolve(&batch?)?;
            Ok(match &keep {
                Some(columns) => batch.project(columns)?,
                None => batch,
            })
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), filled)))
    }
}
